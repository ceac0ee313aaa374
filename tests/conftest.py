"""Shared fixtures: sample photos, a registry with the zoo installed, a real server on 127.0.0.1:0,
a private PostgreSQL database (``postgres_url``: created on the local server, 127.0.0.1:5432,
user postgres, trust auth, and dropped afterwards; skipped with the reason where none
answers) and an S3-compatible endpoint (``s3_endpoint``: one moto server per session, see
``tests/s3server.py``; ``s3_bucket``: a bucket of a test's own on it, emptied and removed
afterwards; clients via ``tests.s3server.s3_client(s3_endpoint)``)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from imaas.api.app import create_app
from imaas.imaging.samples import sample_photos
from imaas.settings import Settings
from tests.s3server import moto_server, s3_client

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ZOO_FIXTURES = frozenset({"zoo_home", "home_copy", "zoo_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the model zoo ``slow`` (it exports the models with PyTorch
    once per session), so ``pytest -m "not slow"`` is the fast inner loop."""
    for item in items:
        if ZOO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """scikit-image's sample photos as JPEG (chelsea is a tabby cat)."""
    return sample_photos()


@pytest.fixture(scope="session")
def zoo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IMAAS_HOME with the bundled models installed once per session."""
    from imaas.services.container import build_services
    from imaas.zoo.install import install

    home = tmp_path_factory.mktemp("zoo-home")
    services = build_services(Settings(home=home))
    try:
        install(services)
    finally:
        asyncio.run(services.close())
    return home


@pytest.fixture
def home_copy(zoo_home: Path, tmp_path: Path) -> Path:
    """A private copy of the zoo home, for tests that write to the registry."""
    dest = tmp_path / "home"
    shutil.copytree(zoo_home, dest)
    return dest


class RunningServer:
    """uvicorn serving an app in a background thread on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        if settings.server.grpc_port is not None:
            settings.server.grpc_port = 0  # a free port, never the shared default
        self.settings = settings
        self.app = create_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self, wait_ready: bool = True) -> RunningServer:
        import httpx

        self._thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.grpc_port: int | None = getattr(self.app.state, "grpc_port", None)
        # the admin key the first start wrote (every scope), for tests that are not about keys
        key_file = self.settings.admin_key_file
        self.key = key_file.read_text().strip() if self.settings.auth.enabled else ""
        self.headers: dict[str, str] = {"authorization": f"Bearer {self.key}"} if self.key else {}
        while wait_ready and httpx.get(f"{self.url}/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """Start servers for a test (``serve(settings)``); all are stopped afterwards."""
    started: list[RunningServer] = []

    def start(settings: Settings, wait_ready: bool = True) -> RunningServer:
        server = RunningServer(settings).start(wait_ready)
        started.append(server)
        return server

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def zoo_server(zoo_home: Path) -> Iterator[RunningServer]:
    """A server over the zoo home, shared by a test module (read-only use)."""
    server = RunningServer(Settings(home=zoo_home)).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped when the test ends."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        conn = admin.connect()
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {exc.orig}")
    name = f"imaas_test_{uuid.uuid4().hex[:12]}"
    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends connections a failed test may have left open (PostgreSQL 13+).
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        admin.dispose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on 127.0.0.1, started once per session and stopped after it."""
    with moto_server() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    """The name of a new, empty bucket on ``s3_endpoint``, removed when the test ends."""
    client = s3_client(s3_endpoint)
    name = f"imaas-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        client.delete_bucket(Bucket=name)
