"""Interleaved benchmark rounds: order, peer process lifetime, per-round ratios."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from imaas.cli.bench import BenchResult
from imaas.cli.rounds import Contender, Kind, run_rounds, summarize


def result(mode: str, concurrency: int, images_per_s: float, p50: float) -> BenchResult:
    return BenchResult(mode, concurrency, completed=int(images_per_s * 10), seconds=10.0, latencies_ms=[p50] * 5)


def scripted(mode: str, kind: Kind, concurrency: int, speeds: list[tuple[float, float]], log: list[str]) -> Contender:
    """A contender whose k-th run returns speeds[k] = (images/s, p50 ms) and logs itself."""
    calls = iter(speeds)

    def run() -> BenchResult:
        log.append(f"{mode}@{concurrency}")
        ips, p50 = next(calls)
        return result(mode, concurrency, ips, p50)

    return Contender(mode, kind, concurrency, run)


def test_every_round_measures_every_contender_in_order() -> None:
    log: list[str] = []
    contenders = [
        scripted("served", "served", 1, [(10, 5)] * 3, log),
        scripted("raw", "raw", 1, [(12, 4)] * 3, log),
    ]
    seen: list[tuple[int, str]] = []
    results = run_rounds(contenders, 3, lambda k, c, r: seen.append((k, c.mode)))
    assert log == ["served@1", "raw@1"] * 3
    assert seen == [(0, "served"), (0, "raw"), (1, "served"), (1, "raw"), (2, "served"), (2, "raw")]
    assert [[r.mode for r in rnd] for rnd in results] == [["served", "raw"]] * 3


def test_a_peer_process_runs_around_its_group_once_per_round() -> None:
    events: list[str] = []

    @contextmanager
    def peer_process() -> Iterator[object]:
        events.append("start")
        yield None
        events.append("stop")

    def peer(c: int) -> Contender:
        def run() -> BenchResult:
            events.append(f"run@{c}")
            return result("fastapi", c, 5, 9)

        return Contender("fastapi", "peer", c, run, "fastapi", peer_process)

    contenders = [peer(1), peer(8), Contender("raw", "raw", 1, lambda: result("raw", 1, 6, 8))]
    run_rounds(contenders, 2)
    assert events == ["start", "run@1", "run@8", "stop"] * 2


def test_ratios_are_taken_within_each_round() -> None:
    # The machine is twice as fast in round 2: throughput medians alone would pair served's
    # slow run with raw's fast one, per-round ratios stay at 0.9.
    log: list[str] = []
    contenders = [
        scripted("served", "served", 1, [(90, 11.0), (180, 6.0), (92, 11.5)], log),
        scripted("fastapi", "peer", 1, [(60, 16.0), (120, 8.0), (61, 16.0)], log),
        scripted("raw", "raw", 1, [(100, 10.0), (200, 5.0), (102, 10.0)], log),
    ]
    rows = summarize(contenders, run_rounds(contenders, 3))
    served, fastapi, raw = rows
    assert served["images_per_s"] == 92.0  # the median run
    assert served["served_over_best_raw"] == 0.9
    assert served["p50_over_raw_ms"] == 1.0  # deltas 1.0, 1.0, 1.5
    assert served["best_peer"] == "fastapi"
    assert served["over_best_peer"] == 1.5
    assert served["p99_below_best_peer"] is True
    assert fastapi["best_raw_over_this"] == 1.667
    assert "over_best_peer" not in fastapi
    assert "served_over_best_raw" not in raw


def test_latency_delta_only_against_raw_at_the_same_concurrency() -> None:
    log: list[str] = []
    contenders = [
        scripted("served", "served", 32, [(190, 160.0)], log),
        scripted("raw", "raw", 2, [(200, 10.0)], log),
    ]
    (served, _) = summarize(contenders, run_rounds(contenders, 1))
    assert served["served_over_best_raw"] == 0.95
    assert "p50_over_raw_ms" not in served


# -- the API key on every served request -----------------------------------------------------------
KEY = "imaas_abcdefghijkl_" + "k" * 43


def _auth_lines(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization:")]


def test_served_http_requests_carry_the_key_and_peers_only_when_asked() -> None:
    from imaas.cli.bench import bearer
    from imaas.cli.workloads import peer_senders, rest_senders
    from imaas.schemas.manifest import Manifest

    assert bearer(None) == {}
    assert bearer(KEY) == {"Authorization": f"Bearer {KEY}"}
    manifest = Manifest.model_construct()  # the jpeg workload sends the files, not tensors made with it
    (sender,) = rest_senders("http://127.0.0.1:9", "m", "jpeg", manifest, [b"\xff\xd8jpeg"], 1, KEY)
    assert [_auth_lines(r) for r in sender.requests] == [[f"Authorization: Bearer {KEY}".encode()]]  # type: ignore[attr-defined]
    (bare,) = rest_senders("http://127.0.0.1:9", "m", "jpeg", manifest, [b"\xff\xd8jpeg"], 1)
    assert _auth_lines(bare.requests[0]) == []  # type: ignore[attr-defined]
    _, (peer,) = peer_senders("other=raw+http://127.0.0.1:9/p", [b"\xff\xd8jpeg"], 1, KEY)
    assert _auth_lines(peer.requests[0]) == [f"Authorization: Bearer {KEY}".encode()]  # type: ignore[attr-defined]
    _, (stranger,) = peer_senders("fastapi=raw+http://127.0.0.1:9/p", [b"\xff\xd8jpeg"], 1)
    assert _auth_lines(stranger.requests[0]) == []  # type: ignore[attr-defined]


async def test_grpc_requests_carry_the_key_as_lowercase_metadata() -> None:
    from imaas.cli.workloads import grpc_senders
    from imaas.schemas.manifest import Manifest

    sent: list[object] = []

    class Channel:
        """Records what the stub sends instead of sending it."""

        def unary_unary(self, method: str, *args: object, **kwargs: object) -> object:
            async def rpc(request: object, metadata: object = None, **options: object) -> object:
                sent.append((method, metadata))
                return None

            return rpc

        stream_stream = unary_unary  # the stub makes every method; the workload calls ModelInfer only

    manifest = Manifest.model_construct()
    for key, expected in ((KEY, (("authorization", f"Bearer {KEY}"),)), (None, None)):
        sent.clear()
        (sender,) = grpc_senders(Channel(), "m", "jpeg", manifest, [b"\xff\xd8jpeg"], 1, key)
        assert await sender.send(0) is None
        assert sent == [("/inference.GRPCInferenceService/ModelInfer", expected)]
