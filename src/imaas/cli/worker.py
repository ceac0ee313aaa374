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


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the server that started it dies (Linux), so a
    killed server leaves no orphan worker behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class WorkerChild:
    """The training worker ``imaas serve --worker`` runs beside the server: started with the
    server, started again (after ``RESTART_S``, at most ``MAX_RESTARTS`` times) when it exits
    on its own, and stopped with the server."""

    RESTART_S = 5.0
    MAX_RESTARTS = 5

    def __init__(self, home: Path) -> None:
        self.home = home
        self.restarts = 0
        self._stopping = threading.Event()
        self.process = self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="worker-child", daemon=True)
        self._watcher.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "IMAAS_HOME": str(self.home)}
        return subprocess.Popen(
            [sys.executable, "-m", "imaas.cli.main", "worker"], env=env, preexec_fn=_die_with_parent
        )

    def _watch(self) -> None:
        while True:
            code = self.process.wait()
            if self._stopping.is_set():
                return
            if self.restarts >= self.MAX_RESTARTS:
                err_console.print(
                    f"error: the training worker exited with code {code} {self.restarts + 1} times; not restarting it "
                    "(jobs stay queued: run `imaas worker` and read its output)",
                    markup=False,
                )
                return
            err_console.print(f"warning: the training worker exited with code {code}; restarting it", markup=False)
            if self._stopping.wait(self.RESTART_S):
                return
            self.restarts += 1
            self.process = self._spawn()

    def stop(self) -> None:
        """SIGTERM (its running job goes back to the queue), then SIGKILL after ``STOP_GRACE_S``."""
        self._stopping.set()
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._watcher.join(timeout=STOP_GRACE_S)


def register(app: typer.Typer) -> None:
    """Add ``worker`` to the CLI."""
    app.command("worker")(worker)
