"""Does one key's flood starve another key? Key B's latency, idle and while key A floods.

Starts ``imaas serve`` on a free port over ``--home`` (a home with the zoo installed,
default ``~/.imaas``: ``make run`` or ``imaas zoo install`` makes one), creates two keys with
the admin key the server wrote there, and measures key B's sequential predictions of one
JPEG: first on the idle server, then while key A sends ``--flood`` requests as fast as
``--connections`` connections allow (with the bench's own load generator: an HTTP client
library would take the two cores from the server); every request B sends until the flood
ends counts. Key A has a rate limit (``--rps``, burst the same), so
what it sends beyond it is refused with 429 before any model work. Reports B's p50 both
ways and their ratio (the issue's target: within 2x), and A's answers by status.

    .venv/bin/python benchmarks/fairness.py --home ~/.imaas
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from imaas.cli.bench import HttpSender, http_request
from imaas.imaging.samples import sample_photos


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _sequential(client: httpx.AsyncClient, url: str, key: str, body: bytes, n: int) -> list[float]:
    headers = {"authorization": f"Bearer {key}", "content-type": "image/jpeg"}
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = await client.post(url, content=body, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
    return times


async def _flood(base: str, path: str, key: str, body: bytes, total: int, connections: int) -> Counter[str]:
    # the bench's own load generator (prebuilt requests, no HTTP client library): on two cores
    # an httpx flood would take the CPU from the server and measure the client, not the server
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"}
    host, port, raw = http_request(base, path, body, headers)
    statuses: Counter[str] = Counter()
    left = total

    async def worker() -> None:
        nonlocal left
        sender = HttpSender(host, port, [raw])
        try:
            while left > 0:
                left -= 1
                err = await sender.send(0)
                statuses["200" if err is None else err.split(" ", 1)[0]] += 1
        finally:
            sender.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


def _ready() -> bool:
    return True


def _flood_process(base: str, path: str, key: str, body: bytes, total: int, connections: int) -> Counter[str]:
    return asyncio.run(_flood(base, path, key, body, total, connections))


async def measure(base: str, admin: str, args: argparse.Namespace) -> dict[str, object]:
    body = sample_photos()["chelsea"]
    url = f"{base}/v1/models/{args.model}:predict"
    async with httpx.AsyncClient(timeout=60, headers={"authorization": f"Bearer {admin}"}) as http:
        a = await http.post(
            f"{base}/v1/keys",
            json={"name": "flood", "scopes": ["infer"], "limits": {"rps": args.rps, "burst": max(1, int(args.rps))}},
        )
        b = await http.post(f"{base}/v1/keys", json={"name": "steady", "scopes": ["infer"]})
        a.raise_for_status()
        b.raise_for_status()
    key_a, key_b = a.json()["secret"], b.json()["secret"]
    path = f"/v1/models/{args.model}:predict"
    rounds = []
    context = multiprocessing.get_context("spawn")
    async with httpx.AsyncClient(timeout=60) as client:
        await _sequential(client, url, key_b, body, 10)  # warm up
        # the flood runs in a process of its own: in this one it would delay B's client too
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            await asyncio.get_running_loop().run_in_executor(pool, _ready)  # the child is up
            for _ in range(args.rounds):  # idle and flooded in turn: the VM's drift hits both
                idle = await _sequential(client, url, key_b, body, args.samples)
                started = time.perf_counter()
                flood = asyncio.get_running_loop().run_in_executor(
                    pool, _flood_process, base, path, key_a, body, args.flood, args.connections
                )
                busy: list[float] = []
                while not flood.done():  # B's requests that overlap the flood, all of them
                    busy += await _sequential(client, url, key_b, body, 1)
                statuses = await flood
                rounds.append(
                    {
                        "idle_p50_ms": round(statistics.median(idle), 2),
                        "flood_p50_ms": round(statistics.median(busy), 2),
                        "ratio": round(statistics.median(busy) / statistics.median(idle), 3),
                        "b_requests_during_flood": len(busy),
                        "flood_seconds": round(time.perf_counter() - started, 2),
                        "a_answers": dict(sorted(statuses.items())),
                    }
                )
                await asyncio.sleep(max(1.0, 1.0 / args.rps))  # A's bucket refills for the next round
    return {
        "model": args.model,
        "key_a_rate_limit_rps": args.rps,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),  # type: ignore[misc]
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path.home() / ".imaas")
    parser.add_argument("--model", default="mobilenet-v2")
    parser.add_argument("--flood", type=int, default=1000, help="requests key A sends")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rps", type=float, default=20.0, help="key A's rate limit")
    parser.add_argument("--samples", type=int, default=40, help="key B's sequential requests when idle")
    parser.add_argument("--rounds", type=int, default=5, help="idle and flooded phases, in turn")
    args = parser.parse_args()
    port = _free_port()
    imaas = Path(sys.executable).with_name("imaas")
    env = os.environ | {"IMAAS_HOME": str(args.home)}
    server = subprocess.Popen(
        [str(imaas), "serve", "--port", str(port), "--no-grpc", "--log-level", "warning"], env=env
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.2)
        admin = (args.home / "admin.key").read_text().strip()
        print(json.dumps(asyncio.run(measure(base, admin, args)), indent=2))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
