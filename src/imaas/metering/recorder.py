"""Usage units accumulated in memory on the request path, written in batches off it.

``add`` is a dictionary update on the event loop (no I/O, no lock: one loop owns the
recorder); ``flush`` swaps the accumulated batch out and hands it to the ``sink`` on a
thread. A batch the sink fails to write is merged back and tried again at the next flush,
so nothing recorded is lost while the database is away (``services/usage.py`` flushes it
periodically and once more at shutdown).

Example::

    recorder = UsageRecorder(registry_usage.add)     # sink: dict[UsageKey, Units] -> None
    recorder.add(UsageKey("k1", "mobilenet-v2", 1, "classification", date.today()), images=2, ...)
    await recorder.flush()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsageKey:
    """What a unit is counted against: key x model x version x task x UTC day."""

    key_id: str
    model: str
    version: int
    task: str
    day: date


@dataclass
class Units:
    """What was used: requests, images, milliseconds of the server's time, bytes received."""

    requests: int = 0
    images: int = 0
    compute_ms: float = 0.0
    bytes_in: int = 0

    def merge(self, other: Units) -> None:
        """Add ``other`` into these units."""
        self.requests += other.requests
        self.images += other.images
        self.compute_ms += other.compute_ms
        self.bytes_in += other.bytes_in


Sink = Callable[[dict[UsageKey, Units]], None]


class UsageRecorder:
    """Accumulates usage and writes it through ``sink`` in batches."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._pending: dict[UsageKey, Units] = {}
        self._flushing = asyncio.Lock()

    @property
    def pending(self) -> int:
        """Rows waiting to be written."""
        return len(self._pending)

    def add(self, key: UsageKey, *, requests: int = 1, images: int, compute_ms: float, bytes_in: int) -> None:
        """Count one call's units (on the event loop; no I/O)."""
        self._merge(key, Units(requests, images, compute_ms, bytes_in))

    def _merge(self, key: UsageKey, units: Units) -> None:
        current = self._pending.get(key)
        if current is None:
            self._pending[key] = units
        else:
            current.merge(units)

    def take_pending(self) -> dict[UsageKey, Units]:
        """Everything not yet written, removed from the recorder (for a last-resort spill file)."""
        batch, self._pending = self._pending, {}
        return batch

    async def flush(self) -> bool:
        """Write what is pending; on failure keep it for the next flush. True when written."""
        async with self._flushing:
            batch, self._pending = self._pending, {}
            if not batch:
                return True
            write = asyncio.ensure_future(asyncio.to_thread(self._sink, batch))
            try:
                # shielded: a cancelled flush (shutdown) waits for the write it started instead
                # of losing the batch it took; the write's own outcome decides what is kept
                await asyncio.shield(write)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await write
                if write.cancelled() or write.exception() is not None:
                    self._put_back(batch)
                raise
            except Exception as exc:
                self._put_back(batch)
                log.warning("writing %d usage rows failed (kept for the next flush): %s", len(batch), exc)
                return False
            return True

    def _put_back(self, batch: dict[UsageKey, Units]) -> None:
        for key, units in batch.items():  # back in, with whatever arrived meanwhile
            self._merge(key, units)
