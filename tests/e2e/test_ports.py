"""A second server never shares a taken port: it fails at start, in one readable line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imaas.api.grpc_server import start_grpc
from imaas.cli.main import app
from imaas.services.container import build_services
from imaas.settings import Settings


async def test_a_second_grpc_server_on_a_taken_port_fails(tmp_path: Path) -> None:
    first_services = build_services(Settings(home=tmp_path / "a"))
    second_services = build_services(Settings(home=tmp_path / "b"))
    first, port = await start_grpc(first_services, "127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match=f"cannot bind gRPC to 127.0.0.1:{port}: the port is taken"):
            await start_grpc(second_services, "127.0.0.1", port)  # gRPC's default SO_REUSEPORT would share it
    finally:
        await first.stop(grace=None)
        await first_services.close()
        await second_services.close()
    again, same = await start_grpc(second_services, "127.0.0.1", port)  # free once the first is gone
    await again.stop(grace=None)
    assert same == port


def test_imaas_serve_says_in_one_line_that_the_grpc_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = CliRunner().invoke(app, ["serve", "--port", "0", "--grpc-port", str(port), "--home", str(tmp_path / "h")])
    assert r.exit_code == 1
    assert r.output.splitlines() == [
        f"error: cannot bind gRPC to 127.0.0.1:{port}: the port is taken (choose another with --grpc-port, "
        "or --no-grpc)"
    ]
    assert not (tmp_path / "h").exists()  # refused before opening a registry


def test_the_probe_sees_a_free_port_as_free() -> None:
    from imaas.api.grpc_server import port_is_free

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert port_is_free("127.0.0.1", port)
