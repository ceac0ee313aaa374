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
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from imaas.domain import ModelRef
from imaas.imaging.pipeline import image_to_tensor
from imaas.runtime.session import OnnxSession
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

    @property
    def throughput(self) -> float:
        """Completed images per second."""
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in ms."""
        return float(np.percentile(self.latencies_ms, p)) if self.latencies_ms else float("nan")

    def row(self) -> dict[str, float | int | str]:
        """Summary for tables and JSON."""
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "images_per_s": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p90_ms": round(self.percentile(90), 2),
            "p99_ms": round(self.percentile(99), 2),
            "completed": self.completed,
            "errors": self.errors,
        }


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


def _prebuilt(url: str, model: str, photos: list[bytes]) -> tuple[str, int, list[bytes]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"{parts.path.rstrip('/')}/v1/models/{model}:predict"
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in photos
    ]
    return host, port, requests


async def run_served(
    url: str, model: str, photos: list[bytes], concurrency: int, duration: float, warmup: float = 1.0
) -> BenchResult:
    """Drive a running server at ``concurrency`` for ``duration`` seconds (after ``warmup``)."""
    host, port, requests = _prebuilt(url, model, photos)
    result = BenchResult("served", concurrency)
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    async def worker(i: int) -> None:
        conn = _Connection(host, port)
        n = i
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                raw = requests[n % len(requests)]
                n += 1
                try:
                    status, body = await conn.request(raw)
                    ok = status == 200
                    err = "" if ok else f"{status} {body[:120]!r}"
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    conn.close()
                    ok, err = False, f"{type(exc).__name__}: {exc}"
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= end:
                    if ok:
                        result.completed += 1
                        result.latencies_ms.append((t1 - t0) * 1000)
                    else:
                        result.errors += 1
                        if len(result.error_samples) < 5:
                            result.error_samples.append(err)
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.seconds = duration
    return result


def run_raw(
    services: Services, model: str, photos: list[bytes], concurrency: int, duration: float, warmup: float = 1.0
) -> BenchResult:
    """The in-process pipeline with ``min(concurrency, cores)`` threads at batch 1."""
    version = services.registry.resolve(ModelRef.parse(model))
    config = engine_config(services.settings)
    session = OnnxSession(services.artifacts.open_path(version.sha256), config.session)
    limits = decode_limits(services.settings)
    manifest = version.manifest
    assert manifest.input.name is not None
    streams = max(1, min(concurrency, os.cpu_count() or 1))
    result = BenchResult("raw", streams)
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
            tensor = image_to_tensor(photos[n % len(photos)], manifest.input, manifest.preprocess, limits)
            session.run({manifest.input.name: tensor[None]})  # type: ignore[dict-item]
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
