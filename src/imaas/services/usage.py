"""Per-key limits, metering and the usage report: what every prediction costs its caller.

A prediction passes here three times, all cheap on the request path:

1. ``take_request`` (the ``Authenticate`` middleware, for every request of a key with a rate
   limit): one token from the key's bucket, or ``RateLimited`` (429);
2. ``charge`` (once the images are counted, before any runs): the key's day and month
   quotas, or ``QuotaExceeded`` (429); ``refund`` gives them back when the prediction fails;
3. ``record`` (after the answer): units in memory (``metering/recorder.py``), written to the
   registry in batches by ``flush`` off the request path.

A key without limits skips the counters altogether. ``close`` flushes once more; if the
registry is away then, the units go to a spill file under ``IMAAS_HOME`` that the next start
writes, so a clean shutdown never loses usage.

Example::

    usage = UsageService(open_counters(None), SqlUsage(registry), price_of, free_of, {}, spill_dir)
    charge = await usage.charge(principal, 3)
    usage.record(principal, "mobilenet-v2", 1, "classification", 3, compute_ms=12.0, bytes_in=90_000)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from imaas.domain import Principal
from imaas.metering.pricing import Priced, price_lines
from imaas.metering.recorder import Units, UsageKey, UsageRecorder
from imaas.registry.usage import SqlUsage, UsageLine
from imaas.security.quotas import Decision, QuotaCounters

log = logging.getLogger(__name__)

ANONYMOUS_KEY = "-"  # usage of callers when authentication is off (never a key id: ids are base32)
SPILL_GLOB = "usage-*.json"
T = TypeVar("T")


@dataclass(frozen=True)
class Charge:
    """Images charged to a key's quotas at ``at`` (what a refund gives back), and the quotas' state."""

    images: int
    at: float
    decisions: list[Decision] = field(default_factory=list)


NO_CHARGE = Charge(0, 0.0)


class UsageService:
    """Rate limits, quotas, metering and the priced usage report (see the module docstring)."""

    def __init__(
        self,
        counters: QuotaCounters,
        store: SqlUsage,
        model_price: Callable[[str], Decimal | None],
        free_images: Callable[[str], int],
        task_prices: Mapping[str, Decimal],
        spill_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.store = store
        self.recorder = UsageRecorder(self._write)
        self._model_price = model_price
        self._free_images = free_images
        self._task_prices = dict(task_prices)
        self._spill_dir = spill_dir
        self._clock = clock
        self._day_index = -1
        self._day = date(1970, 1, 1)

    # -- the request path ------------------------------------------------------------------
    async def take_request(self, p: Principal) -> Decision | None:
        """One request from the key's token bucket (None: no rate limit); ``RateLimited`` when empty."""
        if p.key_id is None or p.limits.rps is None:
            return None
        return await self.counters.take_request(p.key_id, p.limits, self._clock())

    async def charge(self, p: Principal, images: int) -> Charge:
        """Charge ``images`` to the key's quotas, both or neither; ``QuotaExceeded`` when over."""
        limits = p.limits
        if p.key_id is None or (limits.images_per_day is None and limits.images_per_month is None):
            return NO_CHARGE
        now = self._clock()
        return Charge(images, now, await self.counters.take_images(p.key_id, limits, images, now))

    async def refund(self, p: Principal, charge: Charge) -> None:
        """Give back what ``charge`` took (the prediction failed); never raises."""
        if charge.images and p.key_id is not None:
            try:
                await self.counters.refund_images(p.key_id, p.limits, charge.images, charge.at)
            except Exception as exc:  # a refund lost to a Redis outage costs the caller, not the request
                log.warning("refunding %d images to key %s failed: %s", charge.images, p.key_id, exc)

    async def metered(
        self,
        p: Principal,
        images: int,
        bytes_in: int,
        call: Callable[[], Awaitable[T]],
        answered_by: Callable[[T], tuple[str, int, str]],
    ) -> tuple[T, list[Decision]]:
        """Charge ``images``, run ``call`` (refunded when it fails) and record what answered it
        (``answered_by``: model, version, task of the result); returns the result and the
        quotas' state for the RateLimit headers."""
        charge = await self.charge(p, images)
        start = time.perf_counter()
        try:
            result = await call()
        except BaseException:
            await self.refund(p, charge)
            raise
        model, version, task = answered_by(result)
        compute_ms = (time.perf_counter() - start) * 1000.0
        self.record(p, model, version, task, images, compute_ms=compute_ms, bytes_in=bytes_in)
        return result, charge.decisions

    def record(
        self, p: Principal, model: str, version: int, task: str, images: int, *, compute_ms: float, bytes_in: int
    ) -> None:
        """Count one answered call (a dictionary update: no I/O)."""
        now = self._clock()
        index = math.floor(now / 86400)  # POSIX days: the date is built once a day, not per call
        if index != self._day_index:
            self._day_index, self._day = index, datetime.fromtimestamp(now, UTC).date()
        day = self._day
        key = UsageKey(p.key_id or ANONYMOUS_KEY, model, version, task, day)
        self.recorder.add(key, images=images, compute_ms=compute_ms, bytes_in=bytes_in)

    # -- writing ---------------------------------------------------------------------------
    def _write(self, batch: dict[UsageKey, Units]) -> None:
        self.store.add(
            UsageLine(k.key_id, k.model, k.version, k.task, k.day, u.requests, u.images, u.compute_ms, u.bytes_in)
            for k, u in batch.items()
        )

    async def flush(self) -> bool:
        """Write what was recorded; True when it was (else it is kept for the next flush)."""
        return await self.recorder.flush()

    async def close(self) -> None:
        """Write what was recorded (twice, if the first try fails); spill the rest to a file."""
        for _attempt in range(2):
            if await self.flush():
                break
        batch = self.recorder.take_pending()
        if batch:
            path = await asyncio.to_thread(self._spill, batch)
            log.error("the registry did not take %d usage rows; kept in %s for the next start", len(batch), path)
        with contextlib.suppress(Exception):
            await self.counters.close()

    def _spill(self, batch: dict[UsageKey, Units]) -> Path:
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        rows = [
            [k.key_id, k.model, k.version, k.task, k.day.isoformat(), u.requests, u.images, u.compute_ms, u.bytes_in]
            for k, u in batch.items()
        ]
        path = self._spill_dir / f"usage-{uuid.uuid4().hex}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        tmp.replace(path)
        return path

    def write_spilled(self) -> int:
        """Write the rows a previous shutdown spilled (blocking); returns how many files were written.
        A file is removed only once its rows are in the registry."""
        written = 0
        for path in sorted(self._spill_dir.glob(SPILL_GLOB)) if self._spill_dir.is_dir() else []:
            try:
                rows = json.loads(path.read_text())
                lines = [UsageLine(r[0], r[1], r[2], r[3], date.fromisoformat(r[4]), *r[5:9]) for r in rows]
                self.store.add(lines)
            except Exception as exc:
                log.warning("could not write spilled usage %s (kept): %s", path, exc)
                continue
            path.unlink(missing_ok=True)
            written += 1
        return written

    # -- reading ---------------------------------------------------------------------------
    def price_for(self, model: str, task: str) -> Decimal | None:
        """The model's price per 1,000 images, else its task's, else None (free)."""
        price = self._model_price(model)
        return price if price is not None else self._task_prices.get(task)

    def report(
        self, *, key_id: str | None = None, model: str | None = None, start: date | None = None, end: date | None = None
    ) -> list[Priced]:
        """Usage rows matching the filters, each with its cost (blocking: a database read).

        The free tier is used in day order from the first of each month over all of a key's
        models, so a report that starts mid-month or names one model still reads the whole
        month to know what was free.
        """
        first = start.replace(day=1) if start is not None else None
        lines = self.store.query(key_id=key_id, start=first, end=end)
        prices: dict[tuple[str, str], Decimal | None] = {}
        free: dict[str, int] = {}

        def price(m: str, t: str) -> Decimal | None:
            if (m, t) not in prices:
                prices[m, t] = self.price_for(m, t)
            return prices[m, t]

        def free_of(k: str) -> int:
            if k not in free:
                free[k] = self._free_images(k)
            return free[k]

        return [
            p
            for p in price_lines(lines, price, free_of)
            if (start is None or p.line.day >= start) and (model is None or p.line.model == model)
        ]
