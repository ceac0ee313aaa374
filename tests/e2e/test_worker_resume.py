"""`imaas worker` as a real process: killed outright mid-training, its job is never lost and the
next worker resumes it from the last checkpoint; stopped with SIGTERM, it gives the job back.

A small dataset (3 classes x 40 28x28 grayscale PNGs of stripes) is pushed once per module;
each test submits a ``seed-cnn`` job long enough (200 epochs, ~25 s at 1 thread, never
stopping early) to be interrupted, and follows it through the job table and its events.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imaas.domain import Job, JobEvent, JobState
from imaas.services.container import Services, build_services
from imaas.settings import Settings
from imaas.zoo.mnist import INSTALLER

CLASSES = ("horizontal", "vertical", "diagonal")
PER_CLASS = 40
# ~0.12 s an epoch here: long enough to interrupt, never stopping early
CONFIG: dict[str, Any] = {"arch": "seed-cnn", "epochs": 200, "early_stopping": {"patience": 1000}, "seed": 0}
WORKER_ENV = {"IMAAS_JOBS__HEARTBEAT_S": "0.5", "IMAAS_JOBS__STALE_S": "3", "IMAAS_JOBS__POLL_S": "0.2"}
RESUMED = re.compile(r"resumed from the checkpoint of epoch (\d+)")


def stripes(cls: int, i: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 image of class ``cls`` (horizontal, vertical or diagonal stripes of width 3..6)
    with noise, so no two images are the same file."""
    y, x = np.mgrid[0:28, 0:28]
    width = 3 + i % 4
    line = (y, x, x + y)[cls] // width
    image: np.ndarray = np.clip((line % 2) * 200 + rng.integers(0, 56, (28, 28)), 0, 255).astype(np.uint8)
    return image


def write_dataset(path: Path) -> None:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for c, name in enumerate(CLASSES):
            for i in range(PER_CLASS):
                out = io.BytesIO()
                Image.fromarray(stripes(c, i, rng), mode="L").save(out, format="PNG")
                z.writestr(f"stripes/{name}/{i:03d}.png", out.getvalue())


@pytest.fixture(scope="module")
def dataset_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A home with the stripes dataset pushed; returns it and the dataset version's ref."""
    home = tmp_path_factory.mktemp("worker-home")
    archive = home.parent / f"{home.name}-stripes.zip"
    write_dataset(archive)
    services = build_services(Settings(home=home))
    try:
        with archive.open("rb") as f:
            version, _, report = services.datasets.push("stripes", f, principal=INSTALLER)
    finally:
        asyncio.run(services.close())
    assert report["kept"] == len(CLASSES) * PER_CLASS
    return home, version.ref


@pytest.fixture
def services(dataset_home: tuple[Path, str]) -> Iterator[Services]:
    services = build_services(Settings(home=dataset_home[0]))
    yield services
    asyncio.run(services.close())


class Workers:
    """`imaas worker` subprocesses on one home, their output in files; all killed at the end."""

    def __init__(self, home: Path, logs: Path) -> None:
        self.home = home
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "IMAAS_HOME": str(self.home), **WORKER_ENV}
        out = (self.logs / f"worker-{len(self.started)}.log").open("wb")
        child = subprocess.Popen(
            [sys.executable, "-m", "imaas.cli.main", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        self.started.append(child)
        return child

    def output(self) -> str:
        """Every worker's output, for failure messages."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.iterdir()))

    def kill_all(self) -> None:
        for child in self.started:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=30)


@pytest.fixture
def workers(dataset_home: tuple[Path, str], tmp_path: Path) -> Iterator[Workers]:
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Workers(dataset_home[0], logs)
    try:
        yield started
    finally:
        started.kill_all()


def name_of(child: subprocess.Popen[bytes]) -> str:
    """How the job table names the worker process ``child`` (``host:pid``)."""
    return f"{socket.gethostname()}:{child.pid}"


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, workers: Workers) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{workers.output()}")
        time.sleep(0.1)


def epochs(events: list[JobEvent]) -> list[int]:
    return [int(e.data["epoch"]) for e in events if e.kind == "epoch"]


def submit(services: Services, ref: str, model: str) -> Job:
    job = services.training.submit(INSTALLER, ref, model, CONFIG, description="worker resume test")
    assert job.state is JobState.QUEUED
    return job


def test_a_killed_worker_s_job_is_resumed_from_its_checkpoint_by_the_next_worker(
    services: Services, dataset_home: tuple[Path, str], workers: Workers
) -> None:
    jobs = services.training.jobs
    job = submit(services, dataset_home[1], "stripes-cnn")
    first = workers.start()
    wait_for("two epochs", lambda: len(epochs(jobs.events(job.id))) >= 2, 90, workers)
    assert first.poll() is None, workers.output()
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL

    orphan = jobs.get(job.id)  # never silently lost: still running, its dead worker named
    assert (orphan.state, orphan.worker, orphan.attempts) == (JobState.RUNNING, name_of(first), 1)
    seen_before = epochs(jobs.events(job.id))
    assert seen_before[-1] < CONFIG["epochs"]

    second = workers.start()
    wait_for("the job to end", lambda: jobs.get(job.id).state.final, 120, workers)
    done = jobs.get(job.id)
    assert done.state is JobState.SUCCEEDED, f"{done.error}\n{workers.output()}"
    assert (done.attempts, done.worker) == (2, name_of(second))

    events = jobs.events(job.id)
    logs = [(e.seq, str(e.data.get("message", ""))) for e in events if e.kind == "log"]
    dead = [seq for seq, m in logs if f"worker {name_of(first)} stopped beating" in m and name_of(second) in m]
    assert len(dead) == 1, logs
    resumed = [(seq, int(m.group(1))) for seq, text in logs if (m := RESUMED.search(text))]
    assert len(resumed) == 1, logs
    resume_seq, n = resumed[0]
    assert resume_seq > dead[0]
    # epoch 2's checkpoint is written before its event is reported, and the kill came after that
    assert n >= 2
    before = epochs([e for e in events if e.seq < resume_seq])
    after = epochs([e for e in events if e.seq > resume_seq])
    # the first worker's epochs, less any still buffered for a beat when it was killed
    assert before == list(range(1, len(before) + 1))
    assert len(before) <= n
    assert before[: len(seen_before)] == seen_before
    # the second worker goes on from the checkpoint: no epoch trained twice, none skipped
    assert after == list(range(n + 1, CONFIG["epochs"] + 1)), (n, after[:5])

    result = done.result
    assert (result["model"], result["alias"], result["epochs"]) == ("stripes-cnn", "staging", CONFIG["epochs"])
    record, versions = services.models.describe("stripes-cnn")
    assert record.aliases["staging"] == result["version"]
    version = next(v for v in versions if v.version == result["version"])
    assert version.job_id == job.id
    assert version.dataset == dataset_home[1]
    assert version.metrics["training"]["resumed_from"] == n


def test_sigterm_gives_the_running_job_back_to_the_queue_and_the_worker_exits_cleanly(
    services: Services, dataset_home: tuple[Path, str], workers: Workers
) -> None:
    jobs = services.training.jobs
    job = submit(services, dataset_home[1], "stripes-cnn-term")
    child = workers.start()
    wait_for("an epoch", lambda: len(epochs(jobs.events(job.id))) >= 1, 90, workers)
    running = jobs.get(job.id)
    assert (running.state, running.worker) == (JobState.RUNNING, name_of(child))
    child.send_signal(signal.SIGTERM)
    wait_for("the job to be queued again", lambda: jobs.get(job.id).state is JobState.QUEUED, 15, workers)
    try:
        code = child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker did not exit within 30 s of SIGTERM\n{workers.output()}") from None
    assert code == 0, workers.output()
    released = jobs.get(job.id)
    assert (released.state, released.worker, released.heartbeat_at, released.attempts) == (
        JobState.QUEUED,
        None,
        None,
        0,  # given back, not lost: it does not count against max_attempts
    )
    assert released.finished_at is None
    assert released.error is None
    last = jobs.events(job.id)[-1]
    assert last.kind == "state"
    assert last.data["state"] == "queued"
    assert name_of(child) in last.data["reason"]
    jobs.cancel(job.id, "test")  # nobody is left to run it
