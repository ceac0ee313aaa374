"""Training use cases the edges call: submit a job, follow it, cancel it, read its files.

A job trains one model from one dataset version. Submitting checks everything a worker
would otherwise fail on later: the configuration (``InvalidField`` naming the field), the
dataset version (resolved now, so the job trains exactly the version the caller saw), that
the network fits the images and the job's estimated memory fits ``jobs.max_memory_mib``, and
the caller's right to the target model (``jobs`` scope; a key limited to some models
may train only models it may push, ``ModelForbidden`` otherwise). A key limited to some
models sees only the jobs that train one of them (others are ``JobNotFound``).

Example::

    job = service.submit(p, "digits", "digits-cnn", {"epochs": 5})
    service.events(p, job.id, after=0)
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imaas.domain import Job, JobEvent, JobState, Principal, check_name
from imaas.errors import Conflict, JobNotFound, NotFound, Overloaded
from imaas.registry.artifacts.store import ArtifactStore
from imaas.registry.jobs import SqlJobs
from imaas.schemas.jobs import PLOTS
from imaas.services.access import check_new_model
from imaas.services.datasets import DatasetService
from imaas.training.architectures import model_input_size
from imaas.training.budget import check_budget
from imaas.training.config import parse_train_config

JOB_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_job_id() -> str:
    """``job_`` and 12 random lowercase letters and digits (62 bits)."""
    return "job_" + "".join(secrets.choice(JOB_ID_ALPHABET) for _ in range(12))


class TrainingService:
    """Jobs as callers see them (synchronous: the edges run it on a thread)."""

    def __init__(
        self,
        jobs: SqlJobs,
        datasets: DatasetService,
        artifacts: ArtifactStore,
        max_memory_mib: int = 8192,
        max_streams: int = 64,
    ) -> None:
        self.jobs = jobs
        self.datasets = datasets
        self.artifacts = artifacts
        self.max_memory_mib = max_memory_mib
        # each open event stream polls the database: a bounded number of them at once
        self._streams = threading.BoundedSemaphore(max_streams)
        self.max_streams = max_streams

    def open_stream(self) -> Callable[[], None]:
        """A place for one event stream, and the function that gives it back (safe to call
        twice); ``Overloaded`` (429) when ``jobs.max_streams`` are open."""
        if not self._streams.acquire(blocking=False):
            raise Overloaded(f"{self.max_streams} job event streams are open on this server; retry later")
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._streams.release()

        return release

    def submit(
        self,
        principal: Principal,
        dataset: str,
        model: str,
        config: dict[str, Any],
        description: str = "",
        *,
        claim_for: str | None = None,
    ) -> Job:
        """Queue a training job of ``model`` on ``dataset`` (``name`` or ``name@version``);
        ``claim_for`` creates it already running for that worker (one that runs it in-process)."""
        parsed = parse_train_config(config, prefix="config.")
        check_name(model)
        check_new_model(principal, model)
        version = self.datasets.get(principal, dataset)
        summary = version.summary
        channels = 3 if parsed.arch == "mobilenet-v2-transfer" else int(summary["input"]["channels"])
        check_budget(
            parsed,
            images=int(summary["images"]),
            channels=channels,
            size=model_input_size(parsed, (int(summary["input"]["size"][0]), int(summary["input"]["size"][1]))),
            classes=len(summary["classes"]),
            max_mib=self.max_memory_mib,
        )
        for _ in range(5):
            try:
                return self.jobs.create(
                    new_job_id(),
                    "train",
                    model,
                    version.ref,
                    parsed.model_dump(mode="json"),
                    created_by=principal.actor,
                    description=description,
                    claim_for=claim_for,
                )
            except Conflict:  # the id was drawn before: draw again
                continue
        raise Conflict("could not draw a free job id; retry")

    def get(self, principal: Principal, job_id: str) -> Job:
        """One job the caller sees."""
        job = self.jobs.get(job_id)
        if not principal.sees(job.model):
            raise JobNotFound(f"no job with id {job_id!r}")
        return job

    def list_jobs(self, principal: Principal, states: list[JobState] | None = None, limit: int = 100) -> list[Job]:
        """Jobs newest first that the caller sees (a limited key's are looked for page by page
        until ``limit`` are found or none are left, however many other jobs are newer)."""
        if principal.unrestricted:
            return self.jobs.list_jobs(states=states, limit=limit)
        found: list[Job] = []
        offset, page = 0, max(limit, 200)
        while len(found) < limit:
            batch = self.jobs.list_jobs(states=states, limit=page, offset=offset)
            found += [j for j in batch if principal.sees(j.model)]
            if len(batch) < page:
                break
            offset += page
        return found[:limit]

    def cancel(self, principal: Principal, job_id: str) -> Job:
        """Cancel a queued job now, or ask a running one to stop."""
        self.get(principal, job_id)
        return self.jobs.cancel(job_id, principal.actor)

    def events(self, principal: Principal, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        """The job's events after ``after``."""
        self.get(principal, job_id)
        return self.jobs.events(job_id, after, limit)

    def plot(self, principal: Principal, job_id: str, name: str) -> Path:
        """The PNG file of a finished job's confusion matrix or training curves."""
        job = self.get(principal, job_id)
        sha = (job.result.get("plots") or {}).get(name) if name in PLOTS else None
        if not sha:
            raise NotFound(f"job {job_id} has no plot {name!r} (plots: {', '.join(PLOTS)}, once the job succeeded)")
        return self.artifacts.open_path(sha)
