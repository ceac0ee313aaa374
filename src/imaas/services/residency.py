"""Which loaded versions stay in memory.

Pinned versions stay loaded: every alias, canary and shadow target, and each model's
``keep_latest`` newest versions (the registry's ``pinned_versions``). A version that is
not pinned is unloaded once it has served no request for ``idle_unload_s``; one that just
lost its pin (an alias moved away from it) is unloaded at once, after the requests it holds
have finished. With a memory budget, when the loaded versions' resident memory exceeds it,
unpinned versions go first, least recently used first. An unloaded version loads again on
its next request, off the event loop.

Example::

    residency = Residency(engine, registry.pinned_versions, idle_unload_s=600)
    await residency.refresh()   # after a registry change
    await residency.check()     # periodically
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from imaas.domain import Clock, SystemClock
from imaas.runtime.engine import Engine

log = logging.getLogger(__name__)
Key = tuple[str, int]


class Residency:
    """Applies the load policy to an engine."""

    def __init__(
        self,
        engine: Engine,
        read_pinned: Callable[[], set[Key]],
        *,
        idle_unload_s: float = 600.0,
        memory_budget_bytes: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self._read_pinned = read_pinned
        self.idle_unload_s = idle_unload_s
        self.memory_budget_bytes = memory_budget_bytes
        self.clock: Clock = clock or SystemClock()
        self.pinned: set[Key] = set()
        self.gained: set[Key] = set()  # pinned by the last refresh and not before
        self._lock = asyncio.Lock()

    async def refresh(self) -> list[Key]:
        """Read the pinned versions again; unload the loaded ones that lost their pin.

        Returns the versions unloaded; ``gained`` holds the versions newly pinned (for the
        caller to load). Refreshes run one at a time, so a slow read that started first can
        never overwrite a newer one.
        """
        async with self._lock:
            pinned = await asyncio.to_thread(self._read_pinned)
            lost = self.pinned - pinned
            self.gained = pinned - self.pinned
            self.pinned = pinned
            lost_loaded = [k for k in lost if self.engine.get(k) is not None]
            return await self._unload(lost_loaded, "no alias points at it any more")

    async def check(self) -> list[Key]:
        """Unload unpinned versions idle for ``idle_unload_s``, then, while the loaded
        versions outgrow the memory budget, the least recently used unpinned ones."""
        async with self._lock:
            now = self.clock.now()
            models = [m for m in self.engine.models if m.version.key not in self.pinned]
            idle = {m.version.key for m in models if now - m.last_used >= self.idle_unload_s}
            over: list[Key] = []
            if self.memory_budget_bytes is not None:
                total = sum(m.memory_bytes for m in self.engine.models if m.version.key not in idle)
                for m in sorted((m for m in models if m.version.key not in idle), key=lambda m: m.last_used):
                    if total <= self.memory_budget_bytes:
                        break
                    over.append(m.version.key)
                    total -= m.memory_bytes
            return await self._unload(sorted(idle), "idle") + await self._unload(over, "over the memory budget")

    async def _unload(self, keys: list[Key], why: str) -> list[Key]:
        """Unload ``keys`` that are not pinned (the caller holds ``_lock``)."""
        done: list[Key] = []
        for key in keys:
            if key in self.pinned:
                continue
            if await self.engine.unload(key):
                log.info("unloaded %s@%s: %s", key[0], key[1], why)
                done.append(key)
        return done
