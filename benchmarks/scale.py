"""Startup time, memory and latency with many registered models (performance targets 4 and 5).

Run from the repository root after `make test` (or `make run`) installed the venv:

    .venv/bin/python benchmarks/scale.py

It builds a temporary IMAAS_HOME with the zoo's mobilenet-v2 registered under 50 names
(the same ONNX bytes, stored once: content addressing), then measures, each with a real
`imaas serve` process on a free loopback port:

- startup: seconds from process start to /readyz 200 with the zoo installed (2 models);
- memory: RSS of the server with nothing loaded, then with 10 of the 50 loaded, against
  1.3 x (10 x one session's footprint) + the empty server;
- latency: a page of GET /v1/models (limit=2, so the same two entries) and a predict with
  2 vs 50 registered models, and the whole 50-model list in one page (median of 200);
- on-demand load: the first predict after an unload (load included), median of 5.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def admin_key(home: Path) -> str:
    """The admin key a server on ``home`` wrote at its first start (``IMAAS_AUTH__KEY_FILE`` honoured)."""
    from imaas.settings import Settings

    return Settings(home=home).admin_key_file.read_text().strip()


class Server:
    def __init__(self, home: Path, load_on_startup: bool = True) -> None:
        self.port = free_port()
        env = dict(os.environ, IMAAS_HOME=str(home), IMAAS_RUNTIME__LOAD_ON_STARTUP=str(load_on_startup).lower())
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "imaas"), "serve", "--port", str(self.port), "--no-grpc", "--log-level", "warning"],
            env=env,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_after = self._wait_ready()
        # the admin key the server's first start wrote to the home (every route but health needs a key)
        self.headers = {"Authorization": f"Bearer {admin_key(home)}"}

    def _wait_ready(self) -> float:
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def predict_once(client: httpx.Client, jpeg: bytes, model: str = "mobilenet-v2") -> None:
    client.post(f"/v1/models/{model}:predict", content=jpeg, headers={"Content-Type": "image/jpeg"}).raise_for_status()


def median_ms(fn, n: int = 200) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def list_page(client: httpx.Client) -> None:
    """One page of two models: the same answer whatever the catalog's size."""
    client.get("/v1/models", params={"limit": 2}).raise_for_status()


def session_footprint_mb(path: Path) -> float:
    """RSS growth of a fresh process when it creates one session of ``path`` (as the server does)."""
    code = (
        "import sys, onnxruntime, numpy\n"
        "from pathlib import Path\n"
        "from imaas.runtime.session import OnnxSession, SessionOptions\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) / 1024\n"
        "s0 = OnnxSession(Path(sys.argv[1]), SessionOptions())\n"  # warm the library itself
        "s0.run({'input': numpy.zeros((1, 3, 224, 224), numpy.float32)})\n"
        "before = rss()\n"
        "s = OnnxSession(Path(sys.argv[1]), SessionOptions())\n"
        "s.run({'input': numpy.zeros((1, 3, 224, 224), numpy.float32)})\n"
        "print(rss() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    from imaas.domain import ModelRef
    from imaas.imaging.samples import sample_photo
    from imaas.services.container import build_services
    from imaas.settings import Settings
    from imaas.zoo.install import install

    report: dict[str, object] = {}
    jpeg = sample_photo("chelsea")
    with tempfile.TemporaryDirectory(prefix="imaas-scale-") as tmp:
        home = Path(tmp) / "home"
        services = build_services(Settings(home=home))
        install(services, ["mobilenet-v2", "efficientnet-lite0"])
        version = services.registry.resolve(ModelRef("mobilenet-v2"))
        onnx_path = services.artifacts.open_path(version.sha256)
        manifest = version.manifest

        # startup with the zoo installed, and latency with 2 models registered
        server = Server(home)
        report["startup_ready_s"] = round(server.ready_after, 2)
        client = httpx.Client(base_url=server.url, headers=server.headers)
        predict = partial(predict_once, client, jpeg)
        report["list_page_ms_2_models"] = round(median_ms(partial(list_page, client)), 2)
        report["predict_ms_2_models"] = round(median_ms(predict), 2)
        client.close()
        server.stop()

        for i in range(48):
            services.models.push_file(f"copy-{i:02d}", onnx_path, manifest)
        asyncio.run(services.close())
        report["registered_models"] = 50
        report["session_footprint_mb"] = round(session_footprint_mb(onnx_path), 1)

        server = Server(home, load_on_startup=False)
        client = httpx.Client(base_url=server.url, headers=server.headers, timeout=60)
        client.get("/v1/models").raise_for_status()
        report["rss_empty_mb"] = round(rss_mb(server.proc.pid), 1)
        names = ["mobilenet-v2"] + [f"copy-{i:02d}" for i in range(9)]
        for name in names:
            client.post(f"/v1/models/{name}:predict", content=jpeg, headers={"Content-Type": "image/jpeg"})
        report["rss_10_loaded_mb"] = round(rss_mb(server.proc.pid), 1)
        budget = 1.3 * 10 * float(report["session_footprint_mb"]) + float(report["rss_empty_mb"])  # type: ignore[arg-type]
        report["rss_budget_mb"] = round(budget, 1)
        report["rss_within_budget"] = float(report["rss_10_loaded_mb"]) <= budget  # type: ignore[arg-type]
        report["list_page_ms_50_models"] = round(median_ms(partial(list_page, client)), 2)
        report["list_all_ms_50_models"] = round(median_ms(lambda: client.get("/v1/models").raise_for_status()), 2)
        predict = partial(predict_once, client, jpeg)
        report["predict_ms_50_models"] = round(median_ms(predict), 2)
        loads = []
        for i in range(5):
            name = f"copy-{20 + i:02d}"  # never loaded yet
            t = time.perf_counter()
            client.post(f"/v1/models/{name}:predict", content=jpeg, headers={"Content-Type": "image/jpeg"})
            loads.append(time.perf_counter() - t)
            client.post(f"/v2/repository/models/{name}/unload").raise_for_status()
        report["on_demand_load_and_predict_s"] = round(statistics.median(loads), 3)
        client.close()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
