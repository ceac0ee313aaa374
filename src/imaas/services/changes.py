"""The registry change feed: how one process learns of another's writes.

Every registry write takes the next number of one registry-wide sequence (see
``registry/store.py``). Each process polls ``changes_since(last)`` every
``poll_interval_s`` (1 s by default) on a worker thread and hands the names of the models
that changed to its listener, which warms the versions they now route to and then drops
their cached routes. So a push, alias move, canary or shadow change made anywhere takes
effect everywhere within one poll interval plus the new version's load time, with no
restart.

Why polling a sequence rather than PostgreSQL's LISTEN/NOTIFY: it works the same on
SQLite and PostgreSQL, a dropped connection loses nothing (the next poll reads every
change after the last number seen, where a notification sent while disconnected is gone),
and it costs one indexed query per second per process, off the request path.

Example::

    feed = ChangeFeed(registry.changes_since, on_change, interval_s=1.0)
    await feed.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class ChangeFeed:
    """Polls the registry's change sequence and reports the models that changed."""

    def __init__(
        self,
        changes_since: Callable[[int], tuple[int, set[str]]],
        on_change: Callable[[set[str]], Awaitable[None]],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._changes_since = changes_since
        self._on_change = on_change
        self.interval_s = interval_s
        self.seq: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        """Note the current sequence number and start polling."""
        if self._task is not None:
            return
        with contextlib.suppress(Exception):  # a registry not readable yet: the first poll starts from 0
            self.seq, _ = await asyncio.to_thread(self._changes_since, 2**62)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="registry change feed")

    async def poll(self) -> set[str]:
        """Read the changes since the last poll and hand them to the listener once."""
        seq, names = await asyncio.to_thread(self._changes_since, self.seq if self.seq is not None else 0)
        if names:
            await self._on_change(names)
        self.seq = seq
        return names

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be restarting: keep the old routes, retry
                if not self._failing:
                    log.warning("reading the registry change feed failed (will retry): %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("the registry change feed is readable again")
                self._failing = False

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
