"""The worker process (``imaas worker``): the services a job needs, the runner, the loop.

The process lowers its own priority (``nice``) and bounds torch to ``jobs.threads``
threads, so a server on the same machine stays responsive while a job trains.

Example::

    stop = threading.Event()
    run_worker(Settings(), stop)     # until stop is set (the CLI sets it on SIGTERM/SIGINT)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

from imaas.jobs.runner import LocalRunner
from imaas.jobs.training import TrainingJob
from imaas.jobs.worker import Worker
from imaas.services.container import Services, build_services, training_decode_limits
from imaas.settings import Settings

WORKER_NICE = 10


def build_worker(services: Services, *, name: str | None = None) -> Worker:
    """A worker over ``services``' registry that runs ``train`` jobs in this process."""
    settings = services.settings
    train = TrainingJob(services.datasets, services.models, services.artifacts, training_decode_limits(settings))
    return Worker(
        services.training.jobs,
        LocalRunner({"train": train}),
        settings.jobs,
        work_root=settings.jobs_dir,
        name=name,
    )


def limit_threads(threads: int) -> None:
    """Bound torch (and the BLAS under numpy) to ``threads`` threads, and lower this process's priority."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)


def run_worker(settings: Settings, stop: threading.Event) -> None:
    """Run jobs from the registry ``settings`` names until ``stop`` is set (a job running
    then stops at its next step and goes back to the queue)."""
    limit_threads(settings.jobs.threads)
    services = build_services(settings)
    try:
        worker = build_worker(services)
        worker.stopping = stop
        worker.run_forever()
    finally:
        asyncio.run(services.close())


