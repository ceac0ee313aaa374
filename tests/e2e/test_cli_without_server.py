"""The CLI and the SDK when no server answers, and CLI commands whose extra is not installed.

Each failure must be one line naming the cause and the fix, exit code 1, no traceback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imaas.cli.main import app
from imaas.client import AsyncClient, Client
from imaas.errors import ImaasError, ServerTimeout, ServerUnreachable, TransportError

runner = CliRunner()


@pytest.fixture
def closed_url() -> str:
    """A loopback URL where nothing listens: a port the OS handed out, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL whose listener accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def unreachable_line(url: str) -> str:
    return (
        f"error server_unreachable: nothing answers at {url}; "
        "start a server with 'imaas serve' (or 'make run'), or pass --url / set IMAAS_URL"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["models", "list"],
        ["models", "show", "mobilenet-v2"],
        ["models", "push", "tiny", "{model}"],
        ["predict", "mobilenet-v2", "{image}"],
        ["bench", "--no-raw", "--protocol", "v1", "--duration", "1"],
        ["bench", "--no-raw", "--protocol", "oip-rest-jpeg", "--duration", "1"],
    ],
    ids=lambda args: " ".join(a for a in args if not a.startswith("{")),
)
def test_commands_say_nothing_answers_in_one_line(args: list[str], closed_url: str, tmp_path: Path) -> None:
    files = {"{model}": tmp_path / "tiny.onnx", "{image}": tmp_path / "cat.jpg"}
    for path in files.values():
        path.write_bytes(b"\xff\xd8\xff not sent anyway")
    argv = [str(files[a]) if a in files else a for a in args]
    r = runner.invoke(app, [*argv, "--url", closed_url])
    assert isinstance(r.exception, SystemExit), r.exception  # an exit the command chose, not a crash
    assert r.exit_code == 1
    assert r.stderr == unreachable_line(closed_url) + "\n"
    assert r.stdout == ""


def test_console_script_prints_no_traceback(closed_url: str, tmp_path: Path) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    proc = subprocess.run(
        [sys.executable, "-m", "imaas.cli.main", "predict", "mobilenet-v2", str(image), "--url", closed_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr == unreachable_line(closed_url) + "\n"
    assert proc.stdout == ""


def test_sdk_raises_server_unreachable(closed_url: str) -> None:
    with Client(closed_url) as c:
        assert c.ready() is False
        with pytest.raises(ServerUnreachable) as info:
            c.list_models()
    assert isinstance(info.value, TransportError)
    assert isinstance(info.value, ImaasError)
    assert info.value.code == "server_unreachable"
    assert info.value.detail == f"nothing answers at {closed_url}"


async def test_async_sdk_raises_server_unreachable(closed_url: str) -> None:
    async with AsyncClient(closed_url) as c:
        assert await c.ready() is False
        with pytest.raises(ServerUnreachable):
            await c.predict("mobilenet-v2", b"\xff\xd8\xff")


def test_sdk_raises_server_timeout_when_the_server_never_answers(silent_url: str) -> None:
    with Client(silent_url, timeout=0.2) as c, pytest.raises(ServerTimeout) as info:
        c.get_model("mobilenet-v2")
    assert isinstance(info.value, TransportError)
    assert info.value.detail == f"{silent_url} sent no answer to GET /v1/models/mobilenet-v2 within 0.2 s"


async def test_async_sdk_raises_server_timeout_when_the_server_never_answers(silent_url: str) -> None:
    async with AsyncClient(silent_url, timeout=0.2) as c:
        with pytest.raises(ServerTimeout):
            await c.ready()  # accepted but silent is not "unreachable": ready() does not hide it


# Runs the console script with the extra's modules made unimportable, as in an install
# without that extra: a finder placed first on sys.meta_path refuses them.
WITHOUT_MODULES = """
import sys

blocked = set(sys.argv[1].split(","))
assert not blocked & {m.split(".")[0] for m in sys.modules}, "already imported"


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
sys.argv = ["imaas", *sys.argv[2:]]
from imaas.cli.main import main

main()
"""


@pytest.mark.parametrize(
    ("blocked", "args", "line"),
    [
        (
            "uvicorn,fastapi",
            ["serve", "--port", "0", "--no-grpc"],
            "imaas serve needs the serve extra: pip install 'imaas[serve]'",
        ),
        ("torch", ["zoo", "install"], "imaas zoo install needs the zoo extra: pip install 'imaas[zoo]'"),
        ("skimage", ["samples", "{tmp}"], "imaas samples needs the bench extra: pip install 'imaas[bench]'"),
        (
            "onnxruntime,skimage",
            ["bench", "--no-raw"],
            "imaas bench needs the serve and bench extras: pip install 'imaas[serve,bench]'",
        ),
    ],
)
def test_commands_name_the_missing_extra(blocked: str, args: list[str], line: str, tmp_path: Path) -> None:
    argv = [str(tmp_path) if a == "{tmp}" else a for a in args]
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_MODULES, blocked, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"IMAAS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == line + "\n"
    assert list(tmp_path.iterdir()) == []  # it stopped before doing anything


def test_serve_without_migrating_refuses_an_old_schema_in_one_line_until_db_upgrade(tmp_path: Path) -> None:
    from imaas.registry.migrate import check_schema, head_revision
    from imaas.registry.sql import make_engine

    env = {"IMAAS_REGISTRY__MIGRATE_ON_START": "false", "IMAAS_HOME": str(tmp_path)}
    refused = runner.invoke(app, ["serve", "--port", "0", "--no-grpc"], env=env)
    assert refused.exit_code == 1
    assert "no schema yet" in refused.output
    assert "imaas db upgrade" in refused.output
    assert "Traceback" not in refused.output
    upgraded = runner.invoke(app, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        check_schema(engine)  # raises unless the database is at head
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
    finally:
        engine.dispose()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_serve_refuses_to_run_unauthenticated_off_loopback_in_one_line(tmp_path: Path, host: str) -> None:
    env = {"IMAAS_AUTH__ENABLED": "false", "IMAAS_HOME": str(tmp_path / "h")}
    refused = runner.invoke(app, ["serve", "--host", host, "--port", "0", "--no-grpc"], env=env)
    assert refused.exit_code == 1
    assert refused.output.startswith("error unsafe_settings: authentication is off")
    assert host in refused.output
    assert "Traceback" not in refused.output
    assert not (tmp_path / "h").exists()  # refused before anything was opened or written
