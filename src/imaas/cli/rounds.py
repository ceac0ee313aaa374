"""Interleaved benchmark rounds and the ratios taken from them.

A VM's speed drifts by several percent within minutes (a neighbour's load, the host's
clock), so measuring contender A three times and then B three times folds that drift into
A/B. Instead each round measures every contender once, in the same order; ratios (served
over raw, served over the best peer, the raw pipeline over each peer) and latency deltas are
taken within a round, and the report gives each contender's median run with the median of
its per-round ratios.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

from imaas.cli.bench import BenchResult, median_run

Kind = Literal["served", "peer", "raw"]
Row = dict[str, float | int | str | bool]


@dataclass(frozen=True)
class Contender:
    """One thing to measure at one concurrency.

    Consecutive contenders with the same ``group`` share one ``process`` (a peer server
    started before the first of them and stopped after the last, in every round).
    """

    mode: str
    kind: Kind
    concurrency: int
    run: Callable[[], BenchResult]
    group: str = ""
    process: Callable[[], AbstractContextManager[object]] | None = None


def run_rounds(
    contenders: Sequence[Contender],
    rounds: int,
    on_result: Callable[[int, Contender, BenchResult], None] | None = None,
) -> list[list[BenchResult]]:
    """Measure every contender once per round; returns ``results[round][contender]``."""
    results: list[list[BenchResult]] = []
    for k in range(rounds):
        this_round: list[BenchResult] = []
        i = 0
        while i < len(contenders):
            j = i
            while j < len(contenders) and contenders[j].group == contenders[i].group:
                j += 1
            starter = contenders[i].process
            with starter() if starter is not None else nullcontext():
                for contender in contenders[i:j]:
                    result = contender.run()
                    this_round.append(result)
                    if on_result is not None:
                        on_result(k, contender, result)
            i = j
        results.append(this_round)
    return results


def summarize(contenders: Sequence[Contender], results: list[list[BenchResult]]) -> list[Row]:
    """One row per contender: its median run plus the medians of its per-round ratios.

    ``served_over_best_raw``: images/s over the best raw images/s of the same round.
    ``p50_over_raw_ms``: p50 minus the p50 of the raw run at the same concurrency.
    ``over_best_peer`` (served only): images/s over the fastest peer at that concurrency,
    the peer being the one with the best median. ``best_raw_over_this`` (peers only): the
    best raw images/s over this peer's, i.e. what a server adding no cost at all would get.
    """
    raws = [i for i, c in enumerate(contenders) if c.kind == "raw"]
    medians = [median_run([rnd[i] for rnd in results]) for i in range(len(contenders))]
    rows: list[Row] = []
    for i, contender in enumerate(contenders):
        row: Row = dict(medians[i].row())
        if contender.kind != "raw" and raws:
            row["served_over_best_raw"] = _median(
                [_ratio(rnd[i].throughput, max(rnd[r].throughput for r in raws)) for rnd in results]
            )
            same = [r for r in raws if contenders[r].concurrency == contender.concurrency]
            if same:
                deltas = [rnd[i].percentile(50) - rnd[same[0]].percentile(50) for rnd in results]
                row["p50_over_raw_ms"] = round(statistics.median(deltas), 2)
        if contender.kind == "peer" and raws:
            row["best_raw_over_this"] = _median(
                [_ratio(max(rnd[r].throughput for r in raws), rnd[i].throughput) for rnd in results]
            )
        rivals = [p for p, c in enumerate(contenders) if c.kind == "peer" and c.concurrency == contender.concurrency]
        if contender.kind == "served" and rivals:
            best = max(rivals, key=lambda p: medians[p].throughput)
            row["best_peer"] = contenders[best].mode
            row["over_best_peer"] = _median(
                [_ratio(rnd[i].throughput, max(rnd[p].throughput for p in rivals)) for rnd in results]
            )
            row["p99_below_best_peer"] = medians[i].percentile(99) < medians[best].percentile(99)
        rows.append(row)
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)
