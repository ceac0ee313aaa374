"""``imaas worker``: run the training job queue; and the child worker ``imaas serve --worker`` starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from imaas.cli.terminal import fail

err_console = Console(stderr=True)
STOP_GRACE_S = 30.0

HomeOption = Annotated[
    Path | None, typer.Option("--home", envvar="IMAAS_HOME", help="registry and artifacts folder (default ~/.imaas)")
]


def worker(
    home: HomeOption = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch threads of a job (default IMAAS_JOBS__THREADS, 1)")
    ] = None,
) -> None:
    """Run training jobs from the registry's queue, one at a time, until stopped.

    A job whose worker died (its heartbeat stopped) is taken up again and resumes from its
    last checkpoint. SIGTERM or Ctrl-C stops the running job at its next step and gives
    it back to the queue, so the next worker resumes it at once.
    """
    from imaas.errors import ImaasError
    from imaas.jobs.process import run_worker
    from imaas.settings import Settings

    settings = Settings()
    if home is not None:
        settings.home = home
    if threads is not None:
        settings.jobs.threads = threads
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    from sqlalchemy import make_url

    where = make_url(settings.db_url).render_as_string(hide_password=True)
    err_console.print(f"imaas worker: running jobs of {where} (torch threads {settings.jobs.threads})", markup=False)
    try:
        run_worker(settings, stop)
    except ImaasError as exc:
        raise fail(exc) from None


def start_worker(home: Path) -> subprocess.Popen[bytes]:
    """``imaas worker`` on the registry of ``home``, as a child process."""
    env = {**os.environ, "IMAAS_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "imaas.cli.main", "worker"], env=env)


def stop_worker(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM (its running job goes back to the queue), then SIGKILL after ``STOP_GRACE_S``."""
    child.terminate()
    try:
        child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def register(app: typer.Typer) -> None:
    """Add ``worker`` to the CLI."""
    app.command("worker")(worker)
