"""Shared fixtures: sample photos, a registry with the zoo installed, a real server on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn

from imaas.api.app import create_app
from imaas.imaging.samples import sample_photos
from imaas.settings import Settings

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
        install(services.models)
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
