"""Load generator (served) and in-process pipeline (raw) for ``imaas bench``.

Served: ``concurrency`` asyncio workers (on uvloop) post real JPEGs to ``:predict`` over
keep-alive connections for ``duration`` seconds after a warm-up, and count completions,
latencies and errors. Raw: the same decode + pre-process + ONNX Runtime pipeline run in-process by
``min(concurrency, cores)`` threads, no HTTP. Both use the same photos, so served/raw is
the cost of serving.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

from imaas.domain import ModelRef
from imaas.imaging.pipeline import prepare_image
from imaas.runtime.labelsets import resolve_labels
from imaas.runtime.session import OnnxSession
from imaas.runtime.tasks import Labelled, task
from imaas.services.container import Services, decode_limits, engine_config


@dataclass
class BenchResult:
    """Throughput and latency of one run."""

    mode: str
    concurrency: int
    completed: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    threads: int | None = None  # raw only: intra-op threads per stream

    @property
    def throughput(self) -> float:
        """Completed images per second."""
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in ms."""
        return float(np.percentile(self.latencies_ms, p)) if self.latencies_ms else float("nan")

    def row(self) -> dict[str, float | int | str]:
        """Summary for tables and JSON."""
        row: dict[str, float | int | str] = {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "images_per_s": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p90_ms": round(self.percentile(90), 2),
            "p99_ms": round(self.percentile(99), 2),
            "completed": self.completed,
            "errors": self.errors,
        }
        if self.threads is not None:
            row["intra_op_threads"] = self.threads
        return row


class PeerProcess:
    """A peer server started for its measurement and stopped after it (no command: already running).

    The command runs in its own process group, so stopping it stops the worker processes
    it forked too; the peer is ready once its URL's port accepts connections and answers.
    """

    def __init__(self, command: str | None, url: str, start_timeout_s: float = 180.0) -> None:
        self.command = command
        self.url = url
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PeerProcess:
        if self.command is None:
            return self
        self.proc = subprocess.Popen(self.command, shell=True, start_new_session=True)
        parts = urlsplit(self.url)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"peer command exited with {self.proc.returncode}: {self.command}")
            try:
                with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"peer did not listen on {self.url} within {self.start_timeout_s} s") from None
                time.sleep(0.2)
        time.sleep(2.0)  # let multi-process servers finish starting their workers
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def median_run(runs: list[BenchResult]) -> BenchResult:
    """The run with the median throughput (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.throughput)
    return ordered[(len(ordered) - 1) // 2]


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends prebuilt requests.

    The load generator shares two cores with the server it measures, so it must cost almost
    nothing per request: requests are prebuilt bytes and only the status line and
    Content-Length of an answer are parsed (a general client such as httpx costs about a
    fifth of a core at 150 requests/s, which the served figure would lose).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Sender(Protocol):
    """Sends request number ``n`` of a workload; one per concurrent worker."""

    async def send(self, n: int) -> str | None:
        """Send one request; ``None`` on success, else a short error description."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class HttpSender:
    """Prebuilt HTTP requests over one keep-alive connection."""

    def __init__(self, host: str, port: int, requests: list[bytes]) -> None:
        self.conn = _Connection(host, port)
        self.requests = requests

    async def send(self, n: int) -> str | None:
        try:
            status, body = await self.conn.request(self.requests[n % len(self.requests)])
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.conn.close()
            return f"{type(exc).__name__}: {exc}"
        return None if status == 200 else f"{status} {body[:120]!r}"

    def close(self) -> None:
        self.conn.close()


async def drive(mode: str, senders: list[Sender], duration: float, warmup: float = 1.0) -> BenchResult:
    """Run one worker per sender for ``warmup + duration`` seconds; measure the last ``duration``."""
    result = BenchResult(mode, len(senders))
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    async def worker(i: int, sender: Sender) -> None:
        n = i
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                err = await sender.send(n)
                n += 1
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= end:
                    if err is None:
                        result.completed += 1
                        result.latencies_ms.append((t1 - t0) * 1000)
                    else:
                        result.errors += 1
                        if len(result.error_samples) < 5:
                            result.error_samples.append(err)
        finally:
            sender.close()

    await asyncio.gather(*(worker(i, s) for i, s in enumerate(senders)))
    result.seconds = duration
    return result


def bearer(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header a served request carries (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def http_request(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """``(host, port, raw request bytes)`` for a POST of ``body`` to ``path`` on ``url``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [
        f"POST {parts.path.rstrip('/')}{path} HTTP/1.1",
        f"Host: {host}:{port}",
        *(f"{k}: {v}" for k, v in headers.items()),
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return host, port, "\r\n".join(lines).encode() + body


async def run_served(
    url: str,
    model: str,
    photos: list[bytes],
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
    api_key: str | None = None,
) -> BenchResult:
    """Drive ``POST /v1/models/{model}:predict`` with raw JPEG bodies at ``concurrency``
    (each with ``Authorization: Bearer api_key`` when given)."""
    headers = {"Content-Type": "image/jpeg", **bearer(api_key)}
    built = [http_request(url, f"/v1/models/{model}:predict", p, headers) for p in photos]
    host, port = built[0][0], built[0][1]
    senders: list[Sender] = [HttpSender(host, port, [b[2] for b in built]) for _ in range(concurrency)]
    return await drive("served", senders, duration, warmup)


def run_raw(
    services: Services, model: str, photos: list[bytes], concurrency: int, duration: float, warmup: float = 1.0
) -> BenchResult:
    """The in-process pipeline (decode + pre-process, run, the task's post-processing) with
    ``min(concurrency, cores)`` threads at batch 1.

    One stream runs with the solo session's threads when the server has solo sessions, as a
    lone request does when served, so the two latencies compare like with like.
    """
    version = services.registry.resolve(ModelRef.parse(model))
    config = engine_config(services.settings)
    streams = max(1, min(concurrency, os.cpu_count() or 1))
    options = (config.solo_session() if streams == 1 else None) or config.session
    session = OnnxSession(services.artifacts.open_path(version.sha256), options)
    limits = decode_limits(services.settings)
    manifest = version.manifest
    assert manifest.input.name is not None
    served = task(manifest.task)
    fetch = served.fetch(manifest) or session.output_names[:1]
    labelled = Labelled(manifest, resolve_labels(manifest.labels))
    result = BenchResult("raw", streams, threads=options.intra_op_threads)
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    def stream(i: int) -> None:
        n = i
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            tensor, geometry = prepare_image(photos[n % len(photos)], manifest.input, manifest.preprocess, limits)
            outputs = session.run({manifest.input.name: tensor[None]}, fetch)  # type: ignore[dict-item]
            served.postprocess([o[0] for o in outputs], geometry, labelled, None)
            n += 1
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= end:
                with lock:
                    result.completed += 1
                    result.latencies_ms.append((t1 - t0) * 1000)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = duration
    return result
