"""API keys from the caller's side: the CLI finding a local server's admin key, ``imaas keys``,
``usage`` and ``audit``, and the SDK's key calls, against a real server.

Each test serves a tiny real ONNX classifier from a private home (no zoo, fast loop). A key
is never printed except by the command that made it: every output is checked for it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from imaas.cli.credentials import api_key_for
from imaas.cli.main import app
from imaas.client import AsyncClient, Client
from imaas.errors import (
    InsufficientScope,
    InvalidCredentials,
    KeyNotFound,
    KeyRevoked,
    MissingCredentials,
    Unauthorized,
)
from imaas.schemas.keys import KeyLimitsInfo
from imaas.settings import MeteringSettings, ServerSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier

runner = CliRunner()
SECRET_LINE = re.compile(r"^API key \(shown once\): (imaas_[a-z2-7]{12}_[A-Za-z0-9_-]{43})$", re.MULTILINE)
MANIFEST = "labels: [red, blue, c2, c3]\npreprocess: {resize: exact}\n"
RED = solid((250, 10, 10), size=(32, 32))


@pytest.fixture
def server(tmp_path: Path, serve: Callable[..., RunningServer]) -> RunningServer:
    """A server with ``tiny`` version 1, usage written every 0.1 s."""
    settings = Settings(
        home=tmp_path / "home", server=ServerSettings(grpc_port=None), metering=MeteringSettings(flush_s=0.1)
    )
    running = serve(settings)
    with Client(running.url, api_key=running.key) as c:
        c.push_model("tiny", tiny_classifier(tmp_path / "tiny.onnx"), MANIFEST)
    return running


def invoke(server: RunningServer, *args: str, home: Path | None = None) -> Result:
    """``imaas ARGS --url <server>`` finding the admin key in ``home`` (default: the server's)."""
    result = runner.invoke(app, [*args, "--url", server.url, "--home", str(home or server.settings.home)])
    assert server.key not in result.output  # never the caller's key, whatever the command printed
    return result


def until(cond: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"never happened within {limit_s} s: {what}")
        time.sleep(0.05)


# -- which key the CLI sends ------------------------------------------------------------------------
def test_the_cli_uses_a_local_servers_admin_key_and_says_how_to_pass_one(server: RunningServer, tmp_path: Path) -> None:
    found = invoke(server, "models", "list")
    assert found.exit_code == 0, found.output
    assert "tiny" in found.output
    by_env = runner.invoke(app, ["models", "list", "--url", server.url], env={"IMAAS_HOME": str(server.settings.home)})
    assert by_env.exit_code == 0, by_env.output

    elsewhere = invoke(server, "models", "list", home=tmp_path / "no-server-here")
    assert elsewhere.exit_code == 1
    assert elsewhere.stderr == (
        "error missing_credentials: send 'Authorization: Bearer <API key>'; pass --api-key or set "
        "IMAAS_API_KEY (a server on this machine: --home or IMAAS_HOME naming its home, where it wrote admin.key)\n"
    )

    wrong = "imaas_aaaaaaaaaaaa_" + "b" * 43
    refused = runner.invoke(app, ["models", "list", "--url", server.url, "--api-key", wrong])
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error invalid_credentials:")
    assert wrong not in refused.output
    given = runner.invoke(
        app, ["models", "list", "--url", server.url, "--home", str(tmp_path)], env={"IMAAS_API_KEY": server.key}
    )
    assert given.exit_code == 0, given.output  # the key given wins over (no) key file
    bad = runner.invoke(app, ["models", "list", "--url", server.url, "--api-key", "not a key"])
    assert bad.exit_code == 2
    assert "--api-key" in bad.output
    assert "not a key" not in bad.output


def test_only_a_loopback_url_gets_the_local_admin_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "imaas_aaaaaaaaaaaa_" + "c" * 43
    (tmp_path / "admin.key").write_text(key + "\n")
    assert api_key_for("http://127.0.0.1:9", None, tmp_path) is None  # nobody of ours listens on port 9
    monkeypatch.setattr("imaas.cli.credentials.listener_is_ours", lambda port: True)  # tested on its own
    for url in ("http://127.0.0.1:8000", "http://localhost:9", "http://127.9.9.9", "http://[::1]:8000/"):
        assert api_key_for(url, None, tmp_path) == key, url
    for url in ("http://10.0.0.7:8000", "https://imaas.example.com", "http://[fe80::1]:8000", "127.0.0.1:8000"):
        assert api_key_for(url, None, tmp_path) is None, url
    assert api_key_for("https://imaas.example.com", "  given\n", tmp_path) == "given"
    assert api_key_for("http://127.0.0.1:8000", None, tmp_path / "missing") is None
    (tmp_path / "admin.key").chmod(0)
    try:
        unreadable = api_key_for("http://127.0.0.1:8000", None, tmp_path)
    finally:
        (tmp_path / "admin.key").chmod(0o600)
    import os

    assert unreadable is None or os.geteuid() == 0  # root reads any file


# -- imaas keys, usage, audit -----------------------------------------------------------------------
def test_keys_create_list_rotate_revoke_with_usage_and_audit(server: RunningServer, tmp_path: Path) -> None:
    made = invoke(
        server,
        "keys",
        "create",
        "--name",
        "ci",
        "--scopes",
        "infer,models:read",
        "--models",
        "tiny,team-a-*",
        "--expires",
        "30d",
        "--rps",
        "50",
        "--images-per-month",
        "1000",
        "--free-images-per-month",
        "2",
    )
    assert made.exit_code == 0, made.output
    secret_match = SECRET_LINE.search(made.output)
    assert secret_match, made.output
    secret = secret_match.group(1)
    key_id = secret.split("_")[1]
    assert f"Created API key {key_id} (ci): infer, models:read" in made.output

    with Client(server.url, api_key=secret) as c:
        for _ in range(3):
            assert c.predict("tiny", RED).results[0].predictions[0].label == "red"
        with pytest.raises(InsufficientScope):
            c.list_keys()

    listed = invoke(server, "keys", "list", "--json")
    assert listed.exit_code == 0, listed.output
    keys = {k["id"]: k for k in json.loads(listed.output)}
    assert secret not in listed.output
    mine = keys[key_id]
    assert (mine["name"], mine["scopes"], mine["models"]) == ("ci", ["infer", "models:read"], ["tiny", "team-a-*"])
    assert mine["limits"] == {
        "rps": 50.0,
        "burst": None,
        "images_per_day": None,
        "images_per_month": 1000,
        "free_images_per_month": 2,
    }
    expires = datetime.fromisoformat(mine["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    table = invoke(server, "keys", "list")
    assert table.exit_code == 0, table.output
    assert key_id in table.output
    assert "active" in table.output

    def usage_rows() -> list[dict[str, str]]:
        r = invoke(server, "usage", "--key", key_id, "--format", "csv")
        assert r.exit_code == 0, r.output
        return list(csv.DictReader(io.StringIO(r.output)))

    until(lambda: sum(int(row["images"]) for row in usage_rows()) >= 3, "the 3 images metered")
    (row,) = usage_rows()
    assert (row["key_id"], row["model"], row["version"], row["task"]) == (key_id, "tiny", "1", "classification")
    assert (row["requests"], row["images"], row["free_images"], row["billable_images"]) == ("3", "3", "2", "1")
    shown = invoke(server, "usage", "--key", key_id, "--from", "today", "--to", "today")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert any(key_id in line and "tiny@1" in line for line in lines), shown.output
    totals = [line.split("│") for line in lines if line.startswith("│ total ")]
    # requests, images, free, billable, cost (tiny has no price)
    assert [[t[i].strip() for i in (5, 6, 8, 9, 11)] for t in totals] == [["3", "3", "2", "1", "0"]], shown.output
    as_json = invoke(server, "usage", "--format", "json", "--model", "tiny")
    assert json.loads(as_json.output)["total"]["images"] == 3

    rotated = invoke(server, "keys", "rotate", key_id, "--grace", "1h")
    assert rotated.exit_code == 0, rotated.output
    new_match = SECRET_LINE.search(rotated.output)
    assert new_match, rotated.output
    new_secret = new_match.group(1)
    assert new_secret != secret
    assert f"The old key {key_id} keeps working for 1h." in rotated.output
    for text in (secret, new_secret):  # both work during the grace period
        with Client(server.url, api_key=text) as c:
            assert c.predict("tiny", RED).version == 1

    revoked = invoke(server, "keys", "revoke", key_id)
    assert revoked.exit_code == 0, revoked.output
    assert f"API key {key_id} (ci) revoked at " in revoked.output
    with Client(server.url, api_key=secret) as c, pytest.raises(Unauthorized) as info:
        c.predict("tiny", RED)
    assert info.value.code in {"key_revoked", "invalid_credentials"}
    gone = invoke(server, "keys", "revoke", "nosuchkey234")
    assert gone.exit_code == 1
    assert gone.stderr.startswith("error key_not_found:")

    audit = invoke(server, "audit", "--format", "json", "--key", server.key.split("_")[1], "--since", "1h")
    assert audit.exit_code == 0, audit.output
    actions = [(e["action"], e["target"]) for e in json.loads(audit.output)["entries"]]
    assert actions[:3] == [("key.revoke", key_id), ("key.rotate", key_id), ("key.create", key_id)]
    one = invoke(server, "audit", "--action", "key.create", "--limit", "1")
    assert one.exit_code == 0, one.output
    assert "key.create" in one.output
    assert "key.rotate" not in one.output


def test_keys_options_are_checked_before_anything_is_sent(server: RunningServer) -> None:
    for args, option in [
        (["keys", "create", "--name", "x", "--scopes", "infer", "--expires", "soon"], "--expires"),
        (["keys", "rotate", "abcdefghijkl", "--grace", "a while"], "--grace"),
        (["usage", "--from", "yesterday-ish"], "--from"),
        (["audit", "--since", "recently"], "--since"),
    ]:
        r = invoke(server, *args)
        assert r.exit_code == 2, r.output
        assert option in r.output
    refused = invoke(server, "keys", "create", "--name", "x", "--scopes", "infer,root")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error invalid_request: body.scopes.1")  # names the bad scope's place
    assert "'keys:admin'" in refused.stderr  # and what would do
    listed = invoke(server, "keys", "list", "--json")
    assert [k["name"] for k in json.loads(listed.output)] == ["admin"]


# -- the SDK's key calls ------------------------------------------------------------------------------
def test_sdk_key_calls_against_the_server(server: RunningServer) -> None:
    with Client(server.url, api_key=server.key) as admin:
        (first,) = admin.list_keys()
        assert (first.name, first.created_by) == ("admin", "imaas (first start)")
        assert admin.get_key(first.id).scopes == first.scopes
        made = admin.create_key(
            "reader",
            ["models:read"],
            expires_at=datetime.now(UTC) + timedelta(days=1),
            limits=KeyLimitsInfo(images_per_day=10),
        )
        assert made.secret.startswith(f"imaas_{made.key.id}_")
        assert made.key.limits.images_per_day == 10
        assert made.secret not in repr(made.key)
        with Client(server.url, api_key=made.secret) as reader:
            assert [m.name for m in reader.list_models().models] == ["tiny"]
            with pytest.raises(InsufficientScope):
                reader.predict("tiny", RED)
            with pytest.raises(InsufficientScope):
                reader.create_key("escalate", ["keys:admin"])
        rotated = admin.rotate_key(made.key.id)
        assert admin.get_key(made.key.id).replaced_by == rotated.key.id
        with Client(server.url, api_key=made.secret) as old, pytest.raises(Unauthorized):
            old.list_models()
        revoked = admin.revoke_key(rotated.key.id)
        assert revoked.revoked_at is not None
        with Client(server.url, api_key=rotated.secret) as old, pytest.raises(KeyRevoked):
            old.list_models()
        with pytest.raises(KeyNotFound):
            admin.get_key("nosuchkey234")
        assert [e.target for e in admin.audit(action="key.rotate").entries] == [made.key.id]
        assert [e.target for e in admin.audit(limit=1, action="key.create").entries] == [made.key.id]
        report = admin.usage(key_id=made.key.id)
        assert (report.rows, report.total.images) == ([], 0)
    with Client(server.url) as anonymous, pytest.raises(MissingCredentials):
        anonymous.list_models()
    with Client(server.url, api_key="imaas_aaaaaaaaaaaa_" + "d" * 43) as stranger, pytest.raises(InvalidCredentials):
        stranger.list_models()


async def test_async_sdk_key_calls(server: RunningServer) -> None:
    async with AsyncClient(server.url, api_key=server.key) as admin:
        made = await admin.create_key("async", ["infer"], models=["tiny"])
        assert [k.id for k in await admin.list_keys()][-1] == made.key.id
        async with AsyncClient(server.url, api_key=made.secret) as c:
            assert (await c.predict("tiny", RED)).version == 1
        assert (await admin.revoke_key(made.key.id)).id == made.key.id
        entries = (await admin.audit(key_id=server.key.split("_")[1])).entries
        assert [e.action for e in entries][:2] == ["key.revoke", "key.create"]


# -- how times are typed ------------------------------------------------------------------------------
def test_durations_instants_and_days_as_typed() -> None:
    from datetime import date

    from imaas.cli.times import parse_day, parse_duration, parse_instant

    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    assert parse_duration("3600") == parse_duration(" 1H ") == timedelta(hours=1)
    assert parse_duration("0") == timedelta(0)
    for bad in ("", "h", "1y", "-5m", "1h-", "nan", "soon"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    now = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    assert parse_instant("30d", now, ahead=True) == now + timedelta(days=30)
    assert parse_instant("1h", now, ahead=False) == now - timedelta(hours=1)
    assert parse_instant("2027-01-31T12:00Z", now, ahead=True) == datetime(2027, 1, 31, 12, tzinfo=UTC)
    local = parse_instant("2027-01-31", now, ahead=True)
    assert local.tzinfo is not None  # a time without a zone is this machine's local time
    assert local.replace(tzinfo=None) == datetime(2027, 1, 31)
    with pytest.raises(ValueError, match="neither an ISO-8601 time"):
        parse_instant("3600", now, ahead=True)  # a bare number is no instant
    today = date(2026, 12, 8)
    assert parse_day("today", today) == today
    assert parse_day("7d", today) == date(2026, 12, 1)
    assert parse_day("2026-11-30", today) == date(2026, 11, 30)
    with pytest.raises(ValueError, match="not a day"):
        parse_day("yesterday", today)
