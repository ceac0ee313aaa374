"""The worker: takes jobs from the registry's queue and runs them, one at a time.

A worker claims the oldest queued job (or one whose worker died: its heartbeat went stale),
runs it with its ``Runner`` and finishes it as ``succeeded``, ``failed`` (with the reason)
or ``cancelled``. While a job runs, a heartbeat thread renews it every
``jobs.heartbeat_s``, writes the progress and events the job reported since the last beat
(so a job costs the database one small write per beat, however fast it reports), and
learns whether a cancel was asked. If the job was taken from it (its beats stopped long
enough for another worker to claim it) the worker stops working on it and writes nothing
more. A worker killed outright leaves its job ``running`` with a stale heartbeat: the next
worker takes it up and the job resumes from its last checkpoint (the job log says so).

Example::

    worker = Worker(jobs, runner, settings.jobs, work_root=settings.jobs_dir)
    worker.run_once()            # one job, if any is waiting
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from imaas.domain import Job, JobState
from imaas.errors import Conflict, ImaasError
from imaas.jobs.runner import JobCancelled, Runner
from imaas.registry.jobs import Reported, SqlJobs
from imaas.registry.tables import utcnow
from imaas.settings import JobSettings

log = logging.getLogger(__name__)
PROGRESS_EVENT_S = 5.0


def worker_id() -> str:
    """``host:pid``: how the job table and its events name this worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LiveContext:
    """The ``JobContext`` of a job running in this worker: buffers what the job reports for
    the heartbeat thread, and carries the cancel flag the heartbeat reads."""

    def __init__(
        self,
        job: Job,
        work_dir: Path,
        threads: int,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self._job = job
        self._on_progress = on_progress
        self._work_dir = work_dir
        self._threads = threads
        self._lock = threading.Lock()
        self._progress: dict[str, Any] | None = None
        self._events: list[Reported] = []
        self.cancel_asked = threading.Event()
        self.lost = threading.Event()
        self.stopping = stopping or threading.Event()
        self.beat_now: Callable[[], None] = lambda: None  # the worker's synchronous beat
        self._last_progress_event = -PROGRESS_EVENT_S

    @property
    def job(self) -> Job:
        """The job being run."""
        return self._job

    @property
    def work_dir(self) -> Path:
        """The job's folder under the jobs directory."""
        return self._work_dir

    @property
    def threads(self) -> int:
        """Threads the job may use."""
        return self._threads

    def progress(self, data: dict[str, Any]) -> None:
        """Keep the newest progress for the next beat (also an event of kind ``progress``)."""
        with self._lock:
            self._progress = data
        if self._on_progress is not None:
            self._on_progress(data)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for the next beat."""
        with self._lock:
            self._events.append((kind, data, utcnow()))

    def log(self, message: str) -> None:
        """Queue a log line for the next beat."""
        self.event("log", {"message": message})

    def cancelled(self) -> bool:
        """Whether the job should stop: a cancel reached this worker, the job is no longer its
        own, or the worker is shutting down (then the job goes back to the queue)."""
        return self.cancel_asked.is_set() or self.lost.is_set() or self.stopping.is_set()

    def confirm(self) -> None:
        """A beat now; ``JobCancelled`` when the job was taken over, cancelled or is stopping."""
        self.beat_now()
        if self.cancelled():
            raise JobCancelled

    def give_back(self, progress: dict[str, Any] | None, events: list[Reported]) -> None:
        """Put back what a failed beat could not write, ahead of what came since."""
        with self._lock:
            if self._progress is None:
                self._progress = progress
            self._events = [e for e in events if e[0] != "progress"] + self._events

    def take(self) -> tuple[dict[str, Any] | None, list[Reported]]:
        """The progress and events reported since the last call. The newest progress always
        goes to the job's row; it is also kept as a ``progress`` event at most every
        ``PROGRESS_EVENT_S`` (epochs have their own events), so a long job's log stays small."""
        with self._lock:
            progress, events = self._progress, self._events
            self._progress, self._events = None, []
        now = time.monotonic()
        if progress is not None and now - self._last_progress_event >= PROGRESS_EVENT_S:
            self._last_progress_event = now
            events = [*events, ("progress", progress, utcnow())]
        return progress, events


class Worker:
    """Runs the job queue of one registry."""

    def __init__(
        self,
        jobs: SqlJobs,
        runner: Runner,
        settings: JobSettings,
        *,
        work_root: Path,
        name: str | None = None,
    ) -> None:
        self.jobs = jobs
        self.runner = runner
        self.settings = settings
        self.work_root = work_root
        self.name = name or worker_id()
        # called in the job's thread with each progress report (``imaas zoo install`` shows them)
        self.on_progress: Callable[[dict[str, Any]], None] | None = None
        # set to shut down: the running job stops at its next step and goes back to the queue
        self.stopping = threading.Event()

    def claim(self) -> Job | None:
        """Take the next job, if any."""
        stale_before = utcnow() - timedelta(seconds=self.settings.stale_s)
        return self.jobs.claim(self.name, stale_before=stale_before, max_attempts=self.settings.max_attempts)

    def run_once(self) -> Job | None:
        """Claim and run one job; returns it as it ended (None when none was waiting)."""
        job = self.claim()
        if job is None:
            return None
        return self.run(job)

    def run_forever(self) -> None:
        """Run jobs until ``stopping`` is set (looking every ``jobs.poll_s`` while idle); a
        database that cannot be reached is retried, never fatal."""
        log.info("worker %s runs jobs (torch threads %d)", self.name, self.settings.threads)
        stop = self.stopping
        while not stop.is_set():
            try:
                job = self.run_once()
            except ImaasError as exc:
                log.warning("the job queue cannot be read (will retry): %s", exc.detail)
                job = None
            if job is None:
                stop.wait(self.settings.poll_s)

    def run(self, job: Job) -> Job:
        """Run a claimed job to its end, beating while it runs."""
        work_dir = self.work_root / job.id
        work_dir.mkdir(parents=True, exist_ok=True)
        context = LiveContext(job, work_dir, self.settings.threads, self.on_progress, self.stopping)
        context.beat_now = lambda: self._flush(context)
        if job.attempts > 1:
            found = any(work_dir.iterdir())
            how = "resuming from its last checkpoint" if found else "no checkpoint on this worker, starting afresh"
            context.log(f"attempt {job.attempts}: {how}")
        done = threading.Event()
        beater = threading.Thread(target=self._beat_until, args=(context, done), name=f"beat-{job.id}", daemon=True)
        beater.start()
        state, result, error = JobState.FAILED, None, None
        try:
            result = self.runner.run(job, context)
            state = JobState.SUCCEEDED
        except JobCancelled:
            state = JobState.CANCELLED
            error = "cancelled"
        except ImaasError as exc:
            error = f"{exc.code}: {exc.detail}"
        except Exception as exc:  # the job's own failure: recorded with its traceback, never lost
            error = f"{type(exc).__name__}: {exc}"
            context.log("".join(traceback.format_exception(exc))[-4000:])
        finally:
            done.set()
            beater.join()
        if context.lost.is_set():
            log.warning("job %s was taken over by another worker; dropping this run's outcome", job.id)
            return self.jobs.get(job.id)
        return self._settle(job, context, state, result, error)

    def _settle(
        self, job: Job, context: LiveContext, state: JobState, result: dict[str, Any] | None, error: str | None
    ) -> Job:
        """Write the job's last events and its end, retrying while the database is away (for
        up to ``stale_s``: after that another worker takes the job up anyway)."""
        deadline = time.monotonic() + self.settings.stale_s
        delay = 0.5
        while True:
            try:
                self._flush(context)
                if context.lost.is_set():
                    return self.jobs.get(job.id)
                if state is JobState.CANCELLED and self.stopping.is_set() and not context.cancel_asked.is_set():
                    why = f"worker {self.name} stopped; the job resumes from its checkpoint"
                    return self.jobs.release(job.id, self.name, why)
                outcome = self.jobs.finish(job.id, self.name, state, result=result, error=error)
                shutil.rmtree(context.work_dir, ignore_errors=True)  # its checkpoints are of no more use
                return outcome
            except Conflict:
                return self.jobs.get(job.id)
            except ImaasError as exc:
                if time.monotonic() + delay > deadline:
                    log.error("job %s: could not record its end (%s); another worker takes it up", job.id, exc.detail)
                    raise
                log.warning("job %s: recording its end failed (will retry): %s", job.id, exc.detail)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _flush(self, context: LiveContext) -> None:
        progress, events = context.take()
        try:
            current = self.jobs.beat(context.job.id, self.name, progress, events)
        except Conflict:
            context.lost.set()
            return
        except ImaasError:
            context.give_back(progress, events)  # kept for the next beat
            raise
        if current.cancel_requested:
            context.cancel_asked.set()

    def _beat_until(self, context: LiveContext, done: threading.Event) -> None:
        while not done.wait(self.settings.heartbeat_s):
            try:
                self._flush(context)
            except ImaasError as exc:  # the database is away: the next beat retries
                log.warning("job %s heartbeat failed (will retry): %s", context.job.id, exc.detail)
            if context.lost.is_set():
                return
