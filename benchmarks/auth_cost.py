"""What authentication, limits and metering cost per request, and whether timing tells a key exists.

In one process, against the real ``Authenticator`` (1,000 keys in its table), the real
in-memory quota counters and the real usage recorder, this measures per call (median of
interleaved batches, so drift hits every case alike):

* ``authenticate`` with the right key, with a real key id and a wrong secret, and with an
  unknown id: the last two must not differ (the id's existence is not told by time), and
  the ratio of their medians is reported with the spread between batches;
* the whole hot-path share of a predict: authenticate + rate-limit token + quota charge +
  usage record, for a key with limits (the issue's budget: under 0.1 ms).

Run from the repository root after ``make test``::

    .venv/bin/python benchmarks/auth_cost.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from imaas.domain import ALL_SCOPES, ApiKey, KeyLimits
from imaas.errors import Unauthorized
from imaas.security.keys import new_key
from imaas.security.quotas import MemoryCounters
from imaas.services.auth import Authenticator
from imaas.services.usage import UsageService

BATCH = 2000
ROUNDS = 15


def _table(n: int) -> tuple[Authenticator, list[str]]:
    keys, texts = [], []
    limits = KeyLimits(rps=1e6, burst=10**6, images_per_day=10**12, images_per_month=10**12)
    for i in range(n):
        issued = new_key()
        keys.append(
            ApiKey(issued.id, f"k{i}", issued.secret_hash, ALL_SCOPES, None, limits, datetime.now(UTC), seq=i + 1)
        )
        texts.append(issued.text)
    auth = Authenticator(lambda seq: [k for k in keys if k.seq > seq])
    auth.refresh()
    return auth, texts


def _per_call_us(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    for _ in range(BATCH):
        fn()
    return (time.perf_counter() - start) / BATCH * 1e6


def _refused(auth: Authenticator, header: str) -> Callable[[], None]:
    def call() -> None:
        with contextlib.suppress(Unauthorized):
            auth.authenticate(header)

    return call


def main() -> None:
    auth, texts = _table(1000)
    real = texts[500]
    wrong_secret = new_key(real.split("_")[1]).text
    unknown = new_key().text
    cases: dict[str, Callable[[], Any]] = {
        "valid": lambda: auth.authenticate(f"Bearer {real}"),
        "wrong_secret": _refused(auth, f"Bearer {wrong_secret}"),
        "unknown_id": _refused(auth, f"Bearer {unknown}"),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            samples[name].append(_per_call_us(fn))
    ratios = [w / u for w, u in zip(samples["wrong_secret"], samples["unknown_id"], strict=True)]

    usage = UsageService(MemoryCounters(), None, lambda m: None, lambda k: 0, {}, None)  # type: ignore[arg-type]

    async def hot_path() -> float:
        async def one() -> None:
            p = auth.authenticate(f"Bearer {real}")
            await usage.take_request(p)
            await usage.charge(p, 1)
            usage.record(p, "mobilenet-v2", 1, "classification", 1, compute_ms=10.0, bytes_in=50_000)

        runs = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for _ in range(BATCH):
                await one()
            runs.append((time.perf_counter() - start) / BATCH * 1e6)
        return statistics.median(runs)

    report = {
        "authenticate_us": {name: round(statistics.median(v), 2) for name, v in samples.items()},
        "wrong_secret_over_unknown_id": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        },
        "auth_limits_metering_us_per_request": round(asyncio.run(hot_path()), 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
