"""Artifacts and the registry lock (SQLite and PostgreSQL): a delete leaves a tombstone and
touches no storage, a push calls ``ensure_artifact`` only for tombstoned bytes, and the
sweeper removes unused files, one short transaction each, keeping the tombstone of a
removal that failed. The last tests run it against a real S3 bucket (moto), including a
push that found its bytes in the bucket just before a sweep removed them.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from botocore.config import Config
from sqlalchemy import text

from imaas.errors import RegistryBusy
from imaas.registry.artifacts.s3 import S3ArtifactStore
from imaas.registry.artifacts.store import Staged
from imaas.registry.sql import SqlRegistry, open_registry
from imaas.schemas.manifest import Manifest
from tests.s3server import REGION, s3_client

M = Manifest(labels=["a", "b"])
A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def registry(registry_url: str) -> Iterator[SqlRegistry]:
    reg = open_registry(registry_url)
    yield reg
    reg.close()


def tombstones(registry: SqlRegistry) -> dict[str, bool]:
    """Each tombstone's sha256 and whether its bytes were removed."""
    with registry.engine.connect() as conn:
        rows = conn.execute(text("SELECT sha256, removed_at FROM artifact_tombstones")).all()
    return {sha: removed_at is not None for sha, removed_at in rows}


def never(what: str) -> object:
    def fail(*_args: object) -> None:
        raise AssertionError(f"{what} must not be called here")

    return fail


def test_a_delete_leaves_a_tombstone_and_the_sweep_removes_the_file(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M)
    registry.add_version("m", B, 10, M)
    registry.add_version("other", B, 10, M)
    deleted = registry.delete_version("m", 1)  # no storage call: it cannot take one
    assert deleted.sha256 == A
    registry.delete_version("m", 2)  # "other" still uses B
    assert tombstones(registry) == {A: False}
    removed: list[str] = []
    assert registry.sweep_artifacts(removed.append) == [A]
    assert removed == [A]
    assert tombstones(registry) == {A: True}  # remembered a while: a push on its way may have seen A
    assert registry.sweep_artifacts(never("remove_artifact")) == []  # type: ignore[arg-type]


def test_a_push_calls_ensure_artifact_only_for_tombstoned_bytes(registry: SqlRegistry) -> None:
    # the common path (new bytes, the same version again, the same bytes in another model)
    # does no storage I/O under the registry lock
    ensure = never("ensure_artifact")
    registry.add_version("m", A, 10, M, ensure_artifact=ensure)  # type: ignore[arg-type]
    registry.add_version("m", A, 10, M, ensure_artifact=ensure)  # type: ignore[arg-type]
    registry.add_version("other", A, 10, M, ensure_artifact=ensure)  # type: ignore[arg-type]
    registry.add_version("m", B, 10, M)
    registry.delete_version("m", 2)
    ensured: list[str] = []
    version, created = registry.add_version("again", B, 10, M, ensure_artifact=lambda: ensured.append(B))
    assert (version.version, created, ensured) == (1, True, [B])
    assert tombstones(registry) == {}  # claimed: the bytes are in use again
    registry.add_version("again", B, 10, M, ensure_artifact=ensure)  # type: ignore[arg-type]


def test_an_ensure_artifact_that_fails_aborts_the_push_and_keeps_the_tombstone(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M)
    registry.add_version("m", B, 10, M)
    registry.delete_version("m", 1)

    def unreachable() -> None:
        raise RegistryBusy("the artifact store did not answer: 503")

    with pytest.raises(RegistryBusy):
        registry.add_version("m", A, 10, M, ensure_artifact=unreachable)
    assert [v.sha256 for v in registry.list_versions("m")] == [B]
    assert tombstones(registry) == {A: False}


def test_a_push_that_saw_its_bytes_before_a_sweep_removed_them_stores_them_again(registry: SqlRegistry) -> None:
    # push: commit finds the bytes stored -> sweep removes them -> add_version: must store again
    registry.add_version("m", A, 10, M)
    registry.add_version("m", B, 10, M)
    registry.delete_version("m", 1)
    stored = {A, B}
    assert A in stored  # the push's commit: "already stored", nothing uploaded
    registry.sweep_artifacts(stored.discard)
    assert A not in stored
    registry.add_version("m", A, 10, M, ensure_artifact=lambda: stored.add(A))
    assert A in stored


def test_a_removal_whose_transaction_did_not_commit_is_repaired_by_the_next_push(registry: SqlRegistry) -> None:
    # the file went but the sweep's transaction did not commit (a crash, a lost connection)
    registry.add_version("m", A, 10, M)
    registry.add_version("m", B, 10, M)
    registry.delete_version("m", 1)
    stored = {A, B}

    def remove_then_die(sha: str) -> None:
        stored.discard(sha)
        raise ConnectionError("lost the database after removing the file")

    assert registry.sweep_artifacts(remove_then_die) == []
    assert tombstones(registry) == {A: False}
    registry.add_version("m", A, 10, M, ensure_artifact=lambda: stored.add(A))
    assert A in stored


def test_a_failing_removal_keeps_its_tombstone_and_warns_once(
    registry: SqlRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    registry.add_version("m", A, 10, M)
    registry.add_version("m", B, 10, M)
    registry.add_version("m", C, 10, M)
    registry.delete_version("m", 1)
    registry.delete_version("m", 2)
    attempts: list[str] = []

    def refuse(sha: str) -> None:
        attempts.append(sha)
        raise PermissionError("access denied\nwith a second line nobody needs")

    with caplog.at_level(logging.DEBUG, logger="imaas.registry.sql"):
        assert registry.sweep_artifacts(refuse) == []
        assert registry.sweep_artifacts(refuse) == []
    assert attempts == [A, B, A, B]  # one sha's failure does not stop the others
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"could not remove the unused artifact {sha} (the next sweep retries): PermissionError: access denied"
        for sha in (A, B)
    ]
    assert all(r.exc_info is None for r in caplog.records)
    assert tombstones(registry) == {A: False, B: False}
    removed: list[str] = []
    assert registry.sweep_artifacts(removed.append) == [A, B]
    assert tombstones(registry) == {A: True, B: True}


def test_a_store_that_does_not_answer_ends_the_sweep(registry: SqlRegistry) -> None:
    for sha in (A, B, C):
        registry.add_version("m", sha, 10, M)
    registry.delete_version("m", 1)
    registry.delete_version("m", 2)
    attempts: list[str] = []

    def stalled(sha: str) -> None:
        attempts.append(sha)
        raise RegistryBusy("the artifact store did not answer: ReadTimeoutError")

    assert registry.sweep_artifacts(stalled) == []
    assert attempts == [A]  # not once per tombstone, each under the lock
    assert tombstones(registry) == {A: False, B: False}


def test_the_sweep_honours_older_than_and_limit(registry: SqlRegistry) -> None:
    for sha in (A, B, C):
        registry.add_version("m", sha, 10, M)
    registry.add_version("keep", C, 10, M)
    for version in (1, 2, 3):
        registry.delete_version("m", version)
    assert set(tombstones(registry)) == {A, B}  # "keep" still uses C
    removed: list[str] = []
    assert registry.sweep_artifacts(removed.append, older_than_s=3600) == []
    assert len(registry.sweep_artifacts(removed.append, limit=1)) == 1
    assert len(registry.sweep_artifacts(removed.append)) == 1
    assert sorted(removed) == [A, B]


def test_a_tombstone_of_bytes_in_use_again_is_dropped_without_removing_them(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M)
    with registry.engine.begin() as conn:  # as a write from another code path could leave it
        conn.execute(
            text("INSERT INTO artifact_tombstones (sha256, since) VALUES (:sha, :since)"),
            {"sha": A, "since": datetime(2026, 1, 1)},
        )
    assert registry.sweep_artifacts(never("remove_artifact")) == []  # type: ignore[arg-type]
    assert tombstones(registry) == {}


def test_removed_tombstones_are_forgotten_after_forget_after_s(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M)
    registry.add_version("m", B, 10, M)
    registry.delete_version("m", 1)
    registry.sweep_artifacts(lambda _sha: None)
    registry.sweep_artifacts(lambda _sha: None)  # a day has not passed
    assert tombstones(registry) == {A: True}
    registry.sweep_artifacts(lambda _sha: None, forget_after_s=0)
    assert tombstones(registry) == {}
    registry.delete_version("m", 2)  # a delete after a removal and a re-push waits again
    assert tombstones(registry) == {B: False}


# --- with a real bucket ------------------------------------------------------------------------


DATA = b"onnx bytes for the sweeper " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def push(registry: SqlRegistry, store: S3ArtifactStore, name: str) -> int:
    """A push as ``ModelService.push`` runs it: commit, then add the row, ensuring the bytes."""
    staged = store.stage(io.BytesIO(DATA))

    def ensure(staged: Staged = staged) -> None:
        if not store.exists(staged.sha256):
            store.commit(staged, keep=True)

    try:
        store.commit(staged, keep=True)
        version, _ = registry.add_version(name, staged.sha256, staged.size, M, ensure_artifact=ensure)
    finally:
        store.discard(staged)
    return version.version


def test_with_a_bucket_a_delete_keeps_the_object_until_the_sweep(
    registry: SqlRegistry, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    store = S3ArtifactStore(s3_bucket, "p", tmp_path / "cache", client=s3_client(s3_endpoint))
    version = push(registry, store, "m")
    registry.delete_version("m", version)
    assert store.exists(SHA)
    assert registry.sweep_artifacts(store.delete) == [SHA]
    assert not store.exists(SHA)


def test_with_a_bucket_a_push_racing_a_sweep_keeps_its_object(
    registry: SqlRegistry, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    client = s3_client(s3_endpoint)
    store = S3ArtifactStore(s3_bucket, "p", tmp_path / "cache", client=client)
    sweeper = S3ArtifactStore(s3_bucket, "p", tmp_path / "other-replica", client=client)
    registry.delete_version("m", push(registry, store, "m"))
    staged = store.stage(io.BytesIO(DATA))
    store.commit(staged, keep=True)  # the object is there: nothing is uploaded
    assert registry.sweep_artifacts(sweeper.delete) == [SHA]  # another replica sweeps meanwhile
    assert not store.exists(SHA)
    registry.add_version("m", SHA, len(DATA), M, ensure_artifact=lambda: store.commit(staged, keep=True))
    store.discard(staged)
    assert store.exists(SHA)
    assert S3ArtifactStore(s3_bucket, "p", tmp_path / "reader", client=client).open_path(SHA).read_bytes() == DATA


def test_with_a_bucket_that_does_not_answer_deletes_still_succeed(
    registry: SqlRegistry, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    import boto3

    store = S3ArtifactStore(s3_bucket, "p", tmp_path / "cache", client=s3_client(s3_endpoint))
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    dead_client = session.client(
        "s3", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1}, connect_timeout=1)
    )
    dead = S3ArtifactStore(s3_bucket, "p", tmp_path / "cache", client=dead_client)
    version = push(registry, store, "m")
    assert registry.delete_version("m", version).version == version  # answered; the file waits
    assert registry.sweep_artifacts(dead.delete) == []
    assert tombstones(registry) == {SHA: False}
    assert store.exists(SHA)
    assert registry.sweep_artifacts(store.delete) == [SHA]
    assert not store.exists(SHA)
