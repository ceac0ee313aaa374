"""A process killed with SIGKILL in the middle of a push or a promote leaves the registry
consistent: no version row without its artifact file, no alias pointing at a missing
version, the production alias unchanged, and the same push or promote succeeds afterwards.

Deterministic: a child Python process builds the services on a home (and database) the
test prepared and replaces one function with ``os.kill(os.getpid(), SIGKILL)``, so it dies
at exactly that point of the write. The test then checks the registry from the outside and
serves the home with a real server. Runs on SQLite and on a scratch PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from imaas.errors import ModelNotFound
from imaas.registry.artifacts.local import LocalArtifactStore
from imaas.registry.sql import open_registry
from imaas.services.container import build_services
from imaas.settings import RuntimeSettings, ServerSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier, tiny_weights

LABELS = ["red", "blue", "c2", "c3"]
MANIFEST = {"labels": LABELS, "preprocess": {"resize": "exact"}}
CHILD_TIMEOUT_S = 120

CHILD = r'''
"""Build the services on a home, arm one kill point, then push or promote."""
import asyncio
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from imaas.registry import routing, versions
from imaas.services.container import build_services
from imaas.settings import Settings

home, database, point, onnx, manifest = sys.argv[1:]
services = build_services(Settings(home=Path(home), database_url=database or None))


def die(*_args, **_kwargs):
    loaded = services.inference.engine.get(("tiny", 2)) is not None
    print(f"killed at {point}; tiny@2 loaded: {loaded}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def flushed_then_die(original):
    def record(s, *args, **kwargs):
        original(s, *args, **kwargs)
        s.flush()  # the rows are in the database's open transaction, not committed
        die()
    return record


if point == "artifact_commit":  # the upload is staged and validated, not yet stored
    services.artifacts.commit = die
elif point == "add_version":  # the artifact is stored, the registry row not yet written
    services.registry.add_version = die
elif point == "push_transaction":  # model, version and event rows flushed, not committed
    versions.record = flushed_then_die(versions.record)
elif point == "set_alias":  # the new version is loaded and warmed, the alias not yet moved
    services.registry.set_alias = die
elif point == "alias_transaction":  # the alias row updated and flushed, not committed
    routing.record = flushed_then_die(routing.record)
else:
    sys.exit(f"unknown kill point {point}")

if point in ("set_alias", "alias_transaction"):
    asyncio.run(services.lifecycle.promote("tiny", 2, actor="child"))
else:
    services.models.push_file("tiny", Path(onnx), json.loads(manifest), actor="child")
print("survived", flush=True)
sys.exit(3)
'''


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite under the home) or a new PostgreSQL database (``postgres_url``)."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


def settings(home: Path, database: str | None) -> Settings:
    return Settings(
        home=home,
        database_url=database,
        server=ServerSettings(grpc_port=None),
        runtime=RuntimeSettings(workers=1, solo_threads=1),
    )


def prepare(tmp_path: Path, database: str | None, push_v2: bool) -> tuple[Path, Path]:
    """A home with ``tiny`` v1 in production (and v2 when ``push_v2``); returns it and v2's file."""
    home = tmp_path / "home"
    v1 = tiny_classifier(tmp_path / "v1.onnx", seed=1)
    v2 = tiny_classifier(tmp_path / "v2.onnx", seed=2)
    services = build_services(settings(home, database))
    try:
        services.models.push_file("tiny", v1, MANIFEST)
        if push_v2:
            services.models.push_file("tiny", v2, MANIFEST)
    finally:
        asyncio.run(services.close())
    return home, v2


def kill_child(tmp_path: Path, home: Path, database: str | None, point: str, onnx: Path) -> str:
    """Run the child until it kills itself at ``point``; returns what it printed."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), str(home), database or "", point, str(onnx), json.dumps(MANIFEST)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=Path(__file__).parents[2])
    assert proc.returncode == -signal.SIGKILL, (
        f"the child was not killed at {point} (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def inconsistencies(home: Path, database: str | None) -> list[str]:
    """What a crash must never leave: rows naming missing or corrupt files, aliases (canaries,
    shadows) naming missing versions, push events of versions that never existed."""
    registry = open_registry(database or f"sqlite:///{home / 'registry.db'}")
    artifacts = LocalArtifactStore(home / "artifacts")
    problems: list[str] = []
    try:
        for record in registry.list_models():
            numbers = {v.version for v in registry.list_versions(record.name)}
            for v in registry.list_versions(record.name):
                try:
                    artifacts.open_path(v.sha256)  # exists and hashes to its name
                except Exception as exc:
                    problems.append(f"{record.name}@{v.version}: artifact {v.sha256[:12]}: {exc}")
            for alias, route in record.routes.items():
                for what, n in (("alias", route.version), ("canary", route.canary_version)):
                    if n is not None and n not in numbers:
                        problems.append(f"{record.name}:{alias} {what} -> missing version {n}")
            for event in registry.history(record.name, 1000):
                if event.action == "push" and event.alias is None and event.to_version not in numbers:
                    problems.append(f"{record.name}: push event of missing version {event.to_version}")
    finally:
        registry.close()
    return problems


def registry_state(home: Path, database: str | None) -> tuple[int, dict[str, int], list[int], list[str]]:
    """The change sequence, tiny's aliases, its versions and its history actions."""
    registry = open_registry(database or f"sqlite:///{home / 'registry.db'}")
    try:
        seq, _ = registry.changes_since(0)
        try:
            record = registry.get_model("tiny")
        except ModelNotFound:
            return seq, {}, [], []
        versions = [v.version for v in registry.list_versions("tiny")]
        actions = [e.action for e in registry.history("tiny", 1000)]
        return seq, dict(record.aliases), versions, actions
    finally:
        registry.close()


def labels_for(colour: tuple[int, int, int], seed: int) -> list[str]:
    logits = (np.array(colour, dtype=np.float64) / 255.0) @ tiny_weights(4, seed).astype(np.float64)
    return [LABELS[i] for i in np.argsort(-logits, kind="stable")]


def predict(server: RunningServer, ref: str, colour: tuple[int, int, int]) -> dict[str, Any]:
    r = httpx.post(
        f"{server.url}/v1/models/{ref}:predict",
        content=solid(colour, size=(32, 32)),
        headers={**server.headers, "Content-Type": "image/png"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert r.headers["x-imaas-version"] == f"tiny@{body['version']}"
    return body


def push_again(server: RunningServer, onnx: Path) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/tiny/versions",
        files={"model": ("v2.onnx", onnx.read_bytes())},
        data={"manifest": json.dumps(MANIFEST)},
        headers=server.headers,
        timeout=60,
    )


@pytest.mark.parametrize("point", ["artifact_commit", "add_version", "push_transaction"])
def test_a_push_killed_midway_leaves_nothing_half_done(
    tmp_path: Path, database: str | None, point: str, serve: Callable[..., RunningServer]
) -> None:
    home, v2 = prepare(tmp_path, database, push_v2=False)
    before = registry_state(home, database)
    assert before[1:] == ({"production": 1}, [1], ["push", "push"])

    printed = kill_child(tmp_path, home, database, point, v2)
    assert f"killed at {point}" in printed

    assert inconsistencies(home, database) == []
    assert registry_state(home, database) == before  # no row, no event, no sequence number
    stored = LocalArtifactStore(home / "artifacts").exists(hashlib.sha256(v2.read_bytes()).hexdigest())
    # stored before the row is written, so at worst an unreferenced file remains
    assert stored is (point != "artifact_commit")

    server = serve(settings(home, database))
    pushed = push_again(server, v2)
    assert pushed.status_code == 201, pushed.text
    assert pushed.json()["version"] == 2
    assert predict(server, "tiny", (30, 30, 220))["version"] == 1  # production never moved
    served = predict(server, "tiny@2", (30, 30, 220))
    assert [p["label"] for p in served["results"][0]["predictions"]] == labels_for((30, 30, 220), 2)
    assert inconsistencies(home, database) == []


@pytest.mark.parametrize("point", ["set_alias", "alias_transaction"])
def test_a_promote_killed_midway_leaves_production_where_it_was(
    tmp_path: Path, database: str | None, point: str, serve: Callable[..., RunningServer]
) -> None:
    home, _v2 = prepare(tmp_path, database, push_v2=True)
    before = registry_state(home, database)
    assert before[1:] == ({"production": 1}, [2, 1], ["push", "push", "push"])

    printed = kill_child(tmp_path, home, database, point, _v2)
    assert f"killed at {point}; tiny@2 loaded: True" in printed  # it died after the warm-up

    assert inconsistencies(home, database) == []
    assert registry_state(home, database) == before  # production still 1, nothing recorded

    server = serve(settings(home, database))
    assert predict(server, "tiny", (220, 30, 30))["version"] == 1
    promoted = httpx.post(
        f"{server.url}/v1/models/tiny/promote", json={"version": 2}, headers=server.headers, timeout=60
    )
    assert promoted.status_code == 200, promoted.text
    assert (promoted.json()["from_version"], promoted.json()["to_version"]) == (1, 2)
    served = predict(server, "tiny", (220, 30, 30))
    assert served["version"] == 2
    assert [p["label"] for p in served["results"][0]["predictions"]] == labels_for((220, 30, 30), 2)
    assert inconsistencies(home, database) == []
