"""The registry when its PostgreSQL database is unreachable or locked: reads and writes raise
``RegistryUnavailable`` (503, no URL in the detail) while it is gone and work again once it
is back; opening an unreachable database says so in one line; a writer stuck behind a lock
gets ``RegistryBusy`` instead of hanging.

The outage is real: the registry talks to PostgreSQL through a TCP proxy the test starts,
stops (closing every connection) and starts again on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from imaas.domain import PRODUCTION, ModelRef
from imaas.errors import RegistryBusy, RegistryUnavailable
from imaas.registry.sql import SqlRegistry, WriteRetry, open_registry
from imaas.schemas.manifest import Manifest

M = Manifest(labels=["a", "b"])
A, B = "a" * 64, "b" * 64


class TcpProxy:
    """Forwards connections to 127.0.0.1:<port> to ``target``; ``stop`` closes the listener and
    every connection it carries, ``start`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                upstream = socket.create_connection(self.target)
                with self._lock:
                    self._conns += [client, upstream]
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    url = make_url(postgres_url)
    p = TcpProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    yield p
    p.stop()


def through(postgres_url: str, port: int) -> str:
    return make_url(postgres_url).set(port=port).render_as_string(hide_password=False)


def secrets_of(url: str) -> list[str]:
    """What a detail must not reveal: host, port, database, the user (as it appears in a URL)."""
    parsed = make_url(url)
    return ["127.0.0.1", str(parsed.port), str(parsed.database), f"{parsed.username}@", "://"]


def calls(registry: SqlRegistry) -> dict[str, Callable[[], Any]]:
    """One of every kind of read and write."""
    return {
        "list_models": registry.list_models,
        "get_model": lambda: registry.get_model("m"),
        "resolve_route": lambda: registry.resolve_route(ModelRef("m")),
        "history": lambda: registry.history("m"),
        "changes_since": lambda: registry.changes_since(0),
        "pinned_versions": registry.pinned_versions,
        "add_version": lambda: registry.add_version("m", B, 10, M),
        "set_alias": lambda: registry.set_alias("m", PRODUCTION, 1),
        "update_model": lambda: registry.update_model("m", description="back"),
        "sweep_artifacts": lambda: registry.sweep_artifacts(lambda _sha: None),
    }


def test_a_database_that_goes_away_and_comes_back(postgres_url: str, proxy: TcpProxy) -> None:
    url = through(postgres_url, proxy.port)
    registry = open_registry(url)
    try:
        registry.add_version("m", A, 10, M)
        proxy.stop()
        for name, call in calls(registry).items():
            with pytest.raises(RegistryUnavailable) as caught:
                call()
            error = caught.value
            assert (error.status, error.code, error.retry_after) == (503, "registry_unavailable", 1.0), name
            assert "cannot be reached" in error.detail, name
            for secret in secrets_of(url):
                assert secret not in error.detail, (name, secret)
        proxy.start()
        for call in calls(registry).values():
            call()  # no exception: the pool reconnects
        assert registry.get_model("m").description == "back"
        assert registry.get_model("m").aliases == {PRODUCTION: 1}
    finally:
        registry.close()


def test_opening_an_unreachable_database_says_so_in_one_line(postgres_url: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = through(postgres_url, port)
    for migrate in (True, False):
        with pytest.raises(RegistryUnavailable) as caught:
            open_registry(url, migrate=migrate)
        detail = caught.value.detail
        assert "\n" not in detail
        assert detail.startswith("the registry database (postgresql) cannot be reached")
        for secret in secrets_of(url):
            assert secret not in detail


def test_a_write_stuck_behind_a_long_lock_gets_registry_busy(postgres_url: str) -> None:
    delays: list[float] = []
    registry = open_registry(
        postgres_url, lock_timeout_s=0.2, retry=WriteRetry(attempts=2, first_delay_s=0.01), sleep=delays.append
    )
    registry.add_version("m", A, 10, M)
    holder = psycopg.connect(make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        holder.execute("SELECT seq FROM registry_state WHERE id = 1 FOR UPDATE")  # a transaction holding it
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(registry.add_version, "m", B, 10, M)
            try:
                error = future.exception(timeout=30)
            except FutureTimeout:
                holder.rollback()  # let the hung writer finish before failing
                pytest.fail("the write waited behind the lock for 30 s instead of giving up")
        assert isinstance(error, RegistryBusy), error
        assert error.status == 503
        assert "2 attempts" in error.detail
        assert delays == [0.01]
        assert registry.get_model("m").latest_version == 1  # reads are not blocked by the lock
    finally:
        holder.rollback()
        holder.close()
    assert registry.add_version("m", B, 10, M)[0].version == 2
    registry.close()
