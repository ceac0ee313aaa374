"""``imaas serve --worker``: the server runs a training worker beside it, starts it again when
it dies, and stops it when it stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from tests.factories import pattern_dataset_zip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def workers_of(server: psutil.Process) -> list[psutil.Process]:
    """The server's live worker children (one killed and not reaped yet is a zombie: not counted)."""
    found = []
    for p in server.children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "worker" in p.cmdline():
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_the_server_s_worker_runs_jobs_is_restarted_and_stops_with_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "IMAAS_HOME": str(tmp_path / "home"), "IMAAS_JOBS__POLL_S": "0.2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "imaas.cli.main", "serve", "--port", str(port), "--no-grpc", "--worker"], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _ready(url), "the server")
        headers = {"authorization": f"Bearer {(tmp_path / 'home' / 'admin.key').read_text().strip()}"}
        proc = psutil.Process(server.pid)
        until(lambda: len(workers_of(proc)) == 1, "the worker child")
        first = workers_of(proc)[0]

        first.kill()  # a worker that dies is started again
        until(lambda: [w.pid for w in workers_of(proc)] not in ([], [first.pid]), "a new worker", timeout=60)

        up = httpx.post(
            f"{url}/v1/datasets/stripes",
            content=pattern_dataset_zip(classes=2, per_class=10),
            headers={**headers, "content-type": "application/zip"},
            timeout=60,
        )
        assert up.status_code == 201, up.text
        job = httpx.post(
            f"{url}/v1/jobs", json={"dataset": "stripes", "model": "m", "config": {"epochs": 1}}, headers=headers
        ).json()
        status = f"{url}/v1/jobs/{job['id']}"
        until(lambda: httpx.get(status, headers=headers).json()["state"] == "succeeded", "the job")
        child = workers_of(proc)[0]
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal it caught
    # the server stops it, or (when the signal ends the server first) the kernel tells it its parent died
    until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, "the worker to stop", 40)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
