"""The worker (jobs/worker.py) over a real SQLite queue: a job's outcome, its log, cancel,
shutdown (the job goes back to the queue), unknown kinds and a job taken over by another worker.

The job functions signal what they reached with ``threading.Event`` and the tests poll the
job's state with a deadline: nothing here sleeps and then asserts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from imaas.domain import Job, JobState
from imaas.errors import InvalidDataset
from imaas.jobs.runner import JobCancelled, JobContext, JobFunction, LocalRunner
from imaas.jobs.worker import Worker
from imaas.registry.jobs import SqlJobs
from imaas.registry.sql import open_registry
from imaas.registry.tables import utcnow
from imaas.settings import JobSettings

DEADLINE_S = 20.0
SETTINGS = JobSettings(heartbeat_s=0.05, stale_s=30, poll_s=0.05)


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[SqlJobs]:
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    yield SqlJobs(registry)
    registry.close()


def make_worker(jobs: SqlJobs, tmp_path: Path, functions: dict[str, JobFunction], name: str = "w1") -> Worker:
    return Worker(jobs, LocalRunner(functions), SETTINGS, work_root=tmp_path / "jobs", name=name)


def queue(jobs: SqlJobs, kind: str = "train", job_id: str = "job_a") -> Job:
    return jobs.create(job_id, kind, "digits", "mnist@1", {"epochs": 1}, created_by="alice")


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_signal(event: threading.Event, what: str) -> None:
    if not event.wait(DEADLINE_S):
        raise AssertionError(f"timed out waiting for {what}")


class InThread:
    """``worker.run_once()`` on a thread of its own, with its return value or exception."""

    def __init__(self, worker: Worker) -> None:
        self.outcome: Job | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
        self._thread.start()

    def _run(self, worker: Worker) -> None:
        try:
            self.outcome = worker.run_once()
        except BaseException as exc:
            self.error = exc

    def join(self) -> Job:
        self._thread.join(DEADLINE_S)
        assert not self._thread.is_alive(), "the worker did not finish its job"
        assert self.error is None, repr(self.error)
        assert self.outcome is not None
        return self.outcome


def looping_until_cancelled(started: threading.Event) -> JobFunction:
    """A job that loops, checking ``context.cancelled()``, until the worker tells it to stop."""

    def function(job: Job, context: JobContext) -> dict[str, Any]:
        context.log("looping")
        started.set()
        deadline = time.monotonic() + DEADLINE_S
        while not context.cancelled():
            if time.monotonic() > deadline:
                return {"cancelled": False}  # the test fails on the state, not by hanging
            time.sleep(0.005)
        raise JobCancelled

    return function


def test_run_once_with_an_empty_queue_returns_none(jobs: SqlJobs, tmp_path: Path) -> None:
    assert make_worker(jobs, tmp_path, {}).run_once() is None


def test_a_job_that_returns_succeeds_with_its_result_and_its_reports_in_the_log(
    jobs: SqlJobs, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def function(job: Job, context: JobContext) -> dict[str, Any]:
        seen.update(job=job.id, work_dir=context.work_dir, threads=context.threads)
        (context.work_dir / "checkpoint.txt").write_text("epoch 1")
        context.progress({"epoch": 1, "of": 2})
        context.event("epoch", {"epoch": 1, "val_accuracy": 0.5})
        context.log("half way")
        context.progress({"epoch": 2, "of": 2})
        return {"version": 7, "accuracy": 0.9}

    queue(jobs)
    done = make_worker(jobs, tmp_path, {"train": function}).run_once()
    assert done is not None
    assert (done.state, done.result, done.error, done.worker) == (
        JobState.SUCCEEDED,
        {"version": 7, "accuracy": 0.9},
        None,
        "w1",
    )
    assert done.progress == {"epoch": 2, "of": 2}  # the newest progress wins
    assert seen == {"job": "job_a", "work_dir": tmp_path / "jobs" / "job_a", "threads": SETTINGS.threads}
    assert not (tmp_path / "jobs" / "job_a").exists()  # a finished job's checkpoints are removed with its folder
    events = jobs.events("job_a")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    reported = [(e.kind, e.data) for e in events if e.kind in ("epoch", "log")]
    assert reported == [("epoch", {"epoch": 1, "val_accuracy": 0.5}), ("log", {"message": "half way"})]
    assert [e.data for e in events if e.kind == "progress"] == [{"epoch": 2, "of": 2}]
    assert [e.data["state"] for e in events if e.kind == "state"] == ["queued", "running", "succeeded"]


def test_a_job_that_raises_fails_with_the_error_and_its_traceback_in_the_log(jobs: SqlJobs, tmp_path: Path) -> None:
    def broken_step(job: Job, context: JobContext) -> dict[str, Any]:
        raise ValueError("pixel 3 is not a number")

    queue(jobs)
    done = make_worker(jobs, tmp_path, {"train": broken_step}).run_once()
    assert done is not None
    assert done.state is JobState.FAILED
    assert done.error == "ValueError: pixel 3 is not a number"
    assert done.result == {}
    logs = [e.data["message"] for e in jobs.events("job_a") if e.kind == "log"]
    assert len(logs) == 1
    assert logs[0].startswith("Traceback (most recent call last)")
    assert "broken_step" in logs[0]
    assert "ValueError: pixel 3 is not a number" in logs[0]
    last = jobs.events("job_a")[-1]
    assert last.data == {"state": "failed", "reason": "ValueError: pixel 3 is not a number"}


def test_a_job_that_raises_an_imaas_error_fails_with_its_code_and_detail(jobs: SqlJobs, tmp_path: Path) -> None:
    def function(job: Job, context: JobContext) -> dict[str, Any]:
        raise InvalidDataset("labels: the dataset has a single class 'cat'")

    queue(jobs)
    done = make_worker(jobs, tmp_path, {"train": function}).run_once()
    assert done is not None
    assert done.state is JobState.FAILED
    assert done.error == "invalid_dataset: labels: the dataset has a single class 'cat'"


def test_a_job_of_an_unknown_kind_fails_naming_the_kind(jobs: SqlJobs, tmp_path: Path) -> None:
    queue(jobs, kind="export")
    done = make_worker(jobs, tmp_path, {"train": lambda job, context: {}}).run_once()
    assert done is not None
    assert done.state is JobState.FAILED
    assert done.error is not None
    assert "kind" in done.error
    assert "'export'" in done.error


def test_a_cancel_reaches_the_running_job_and_ends_it_cancelled(jobs: SqlJobs, tmp_path: Path) -> None:
    started = threading.Event()
    queue(jobs)
    worker = make_worker(jobs, tmp_path, {"train": looping_until_cancelled(started)})
    running = InThread(worker)
    wait_signal(started, "the job to start")
    asked = jobs.cancel("job_a", "alice")
    assert (asked.state, asked.cancel_requested) == (JobState.RUNNING, True)
    done = running.join()
    assert done.state is JobState.CANCELLED
    assert jobs.get("job_a").state is JobState.CANCELLED
    messages = [e.data.get("message") for e in jobs.events("job_a") if e.kind == "log"]
    assert "looping" in messages
    assert "cancel asked by alice" in messages


def test_a_stopping_worker_gives_its_job_back_and_another_worker_finishes_it(jobs: SqlJobs, tmp_path: Path) -> None:
    started = threading.Event()
    queue(jobs)
    first = make_worker(jobs, tmp_path, {"train": looping_until_cancelled(started)}, name="w1")
    running = InThread(first)
    wait_signal(started, "the job to start")
    first.stopping.set()
    released = running.join()
    assert (released.state, released.worker, released.cancel_requested) == (JobState.QUEUED, None, False)
    reason = jobs.events("job_a")[-1].data
    assert reason["state"] == "queued"
    assert "w1" in reason["reason"]

    attempts: list[int] = []

    def resume(job: Job, context: JobContext) -> dict[str, Any]:
        attempts.append(job.attempts)
        return {"resumed": True}

    # a fresh heartbeat window: the released job is claimable at once, not only once stale
    second = make_worker(jobs, tmp_path, {"train": resume}, name="w2")
    done = second.run_once()
    assert done is not None
    # a job given back is not a job whose worker died: it does not count against max_attempts
    assert (done.state, done.worker, done.attempts, done.result) == (JobState.SUCCEEDED, "w2", 1, {"resumed": True})
    assert attempts == [1]


def test_heartbeats_write_progress_while_the_job_runs(jobs: SqlJobs, tmp_path: Path) -> None:
    reported, finish = threading.Event(), threading.Event()

    def function(job: Job, context: JobContext) -> dict[str, Any]:
        context.progress({"epoch": 3})
        reported.set()
        if not finish.wait(DEADLINE_S):
            raise AssertionError("never told to finish")
        return {}

    queue(jobs)
    running = InThread(make_worker(jobs, tmp_path, {"train": function}))
    wait_signal(reported, "the progress report")
    # the progress reaches the database through a beat, before the job ends
    wait_for("a beat with the progress", lambda: jobs.get("job_a").progress == {"epoch": 3})
    seen = jobs.get("job_a").heartbeat_at
    assert seen is not None
    wait_for("a renewed heartbeat", lambda: (jobs.get("job_a").heartbeat_at or seen) > seen)
    assert jobs.get("job_a").state is JobState.RUNNING
    finish.set()
    assert running.join().state is JobState.SUCCEEDED


def test_a_job_taken_over_by_another_worker_is_dropped_without_writing_its_outcome(
    jobs: SqlJobs, tmp_path: Path
) -> None:
    started, taken = threading.Event(), threading.Event()

    def function(job: Job, context: JobContext) -> dict[str, Any]:
        started.set()
        if not taken.wait(DEADLINE_S):
            raise AssertionError("never taken over")
        deadline = time.monotonic() + DEADLINE_S
        while not context.cancelled() and time.monotonic() < deadline:  # the next beat finds it lost
            time.sleep(0.005)
        context.log("from the old worker")
        return {"version": 1}

    queue(jobs)
    running = InThread(make_worker(jobs, tmp_path, {"train": function}, name="w1"))
    wait_signal(started, "the job to start")
    other = jobs.claim("w2", stale_before=utcnow() + timedelta(hours=1), max_attempts=3)
    assert other is not None
    assert other.worker == "w2"
    taken.set()
    outcome = running.join()
    assert (outcome.state, outcome.worker, outcome.result) == (JobState.RUNNING, "w2", {})
    assert all(e.data.get("message") != "from the old worker" for e in jobs.events("job_a"))
