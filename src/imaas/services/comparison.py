"""How a shadow compares with the version that answered: agreement and latency per pair.

For each pair (serving version, shadow version) this process counts, in images, the ones
compared, the ones dropped because the shadow queue was full and the ones the shadow
failed; over the compared ones, how often they agree (the task's measure: same top-1 class
for classification); and each side's latency per request (the serving version's from the
request's arrival to its answer, queueing included; the shadow's from when its copy
started to run; the last ``window`` samples, for percentiles). The figures are this
process's since it started; every replica keeps its own.

Example::

    stats = Comparisons()
    stats.record(("cnn", 1), ("cnn", 2), agreements=[1.0], primary_s=0.012, shadow_s=0.015)
    stats.snapshot("cnn")[0].agreement  # 1.0
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

Key = tuple[str, int]


@dataclass
class _Pair:
    compared: int = 0
    agreed: float = 0.0
    dropped: int = 0
    failed: int = 0
    primary_s: deque[float] = field(default_factory=deque)
    shadow_s: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class Latency:
    """Percentiles of the last samples, in milliseconds."""

    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None


@dataclass(frozen=True)
class PairStats:
    """One serving version against one shadow version, on this process."""

    primary: Key
    shadow: Key
    compared: int
    agreed: float
    dropped: int
    failed: int
    primary_latency: Latency
    shadow_latency: Latency

    @property
    def agreement(self) -> float | None:
        """Share of compared images on which both agreed (None before the first comparison)."""
        return self.agreed / self.compared if self.compared else None


def _latency(samples: deque[float]) -> Latency:
    if not samples:
        return Latency(None, None, None)
    ms = np.asarray(samples) * 1000.0
    return Latency(float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.mean()))


class Comparisons:
    """Counters per (serving, shadow) pair; thread-safe."""

    def __init__(self, window: int = 2048) -> None:
        self.window = window
        self._pairs: dict[tuple[Key, Key], _Pair] = {}
        self._lock = threading.Lock()

    def _pair(self, primary: Key, shadow: Key) -> _Pair:
        pair = self._pairs.get((primary, shadow))
        if pair is None:
            pair = self._pairs[(primary, shadow)] = _Pair(
                primary_s=deque(maxlen=self.window), shadow_s=deque(maxlen=self.window)
            )
        return pair

    def record(self, primary: Key, shadow: Key, *, agreements: list[float], primary_s: float, shadow_s: float) -> None:
        """One request both answered: how far they agreed on each image (0-1) and how long each took."""
        with self._lock:
            pair = self._pair(primary, shadow)
            pair.compared += len(agreements)
            pair.agreed += sum(agreements)
            pair.primary_s.append(primary_s)
            pair.shadow_s.append(shadow_s)

    def dropped(self, primary: Key, shadow: Key, images: int = 1) -> None:
        """``images`` not run because the shadow queue was full."""
        with self._lock:
            self._pair(primary, shadow).dropped += images

    def failed(self, primary: Key, shadow: Key, images: int = 1) -> None:
        """``images`` the shadow could not answer (load failure, bad image for it)."""
        with self._lock:
            self._pair(primary, shadow).failed += images

    def snapshot(self, model: str) -> list[PairStats]:
        """Every pair whose serving version belongs to ``model``, by versions."""
        with self._lock:
            items = sorted((k, p) for k, p in self._pairs.items() if k[0][0] == model)
            return [
                PairStats(
                    primary=primary,
                    shadow=shadow,
                    compared=p.compared,
                    agreed=p.agreed,
                    dropped=p.dropped,
                    failed=p.failed,
                    primary_latency=_latency(p.primary_s),
                    shadow_latency=_latency(p.shadow_s),
                )
                for (primary, shadow), p in items
            ]
