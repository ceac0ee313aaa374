"""The seam between a job and where it runs.

A ``Runner`` runs one claimed job to its result, reporting through a ``JobContext``:
progress, events and log lines, whether a cancel was asked, a private work folder for
checkpoints, and how many threads it may use. ``LocalRunner`` runs the job's function in
the worker's own process; a cluster runner (Ray) runs the same function elsewhere with a
context that forwards to the worker, so the queue, heartbeats and finishing stay in one
place whichever runner is chosen.

Example::

    runner = LocalRunner({"train": run_training})
    result = runner.run(job, context)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from imaas.domain import Job
from imaas.errors import InvalidField


class JobCancelled(Exception):
    """Raised inside a job when its cancel was asked: the worker ends it as ``cancelled``."""


class JobContext(Protocol):
    """What a running job reports to, and asks, its worker."""

    @property
    def job(self) -> Job:
        """The job being run."""
        ...

    @property
    def work_dir(self) -> Path:
        """A folder of this job's own that outlives the worker (checkpoints)."""
        ...

    @property
    def threads(self) -> int:
        """Threads the job may use (torch intra-op threads)."""
        ...

    def progress(self, data: dict[str, Any]) -> None:
        """The job's latest progress (the newest one wins; written with the next heartbeat)."""
        ...

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """An event to keep in the job's log (``epoch``, ``log``...)."""
        ...

    def log(self, message: str) -> None:
        """A line of the job's log."""
        ...

    def cancelled(self) -> bool:
        """Whether a cancel was asked (the job should raise ``JobCancelled`` soon)."""
        ...

    def confirm(self) -> None:
        """Ask the queue now (not at the next heartbeat) whether the job is still this
        worker's and not cancelled, and raise ``JobCancelled`` if not: what a job calls right
        before an effect that must happen once (registering its version)."""
        ...


JobFunction = Callable[[Job, JobContext], dict[str, Any]]


class Runner(Protocol):
    """Runs one job to its result (a JSON-serialisable dict) or raises."""

    def run(self, job: Job, context: JobContext) -> dict[str, Any]:
        """Run ``job``; ``JobCancelled`` when it stopped for a cancel."""
        ...


class LocalRunner:
    """Runs jobs in this process, by kind."""

    def __init__(self, functions: Mapping[str, JobFunction]) -> None:
        self.functions = dict(functions)

    def run(self, job: Job, context: JobContext) -> dict[str, Any]:
        """Run the function registered for the job's kind."""
        function = self.functions.get(job.kind)
        if function is None:
            raise InvalidField(f"kind: no runner for jobs of kind {job.kind!r}")
        return function(job, context)
