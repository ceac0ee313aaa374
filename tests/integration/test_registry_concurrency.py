"""Concurrent registry writes: pushes, alias moves and deletes racing, the change feed read
while they commit, and a database locked by others.

The races run real threads against a real SQLite file and a real PostgreSQL database. The
lock tests hold SQLite's write lock from a second, raw ``sqlite3`` connection and observe the
registry's retries through an injected ``sleep``, so nothing here sleeps for real.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from imaas.domain import PRODUCTION
from imaas.errors import ConcurrentChange, RegistryBusy
from imaas.registry.artifacts.local import LocalArtifactStore
from imaas.registry.sql import SqlRegistry, WriteRetry, open_registry
from imaas.schemas.manifest import Manifest
from imaas.services.models import ModelService
from tests.factories import tiny_classifier

THREADS = 8
M = Manifest(labels=["a", "b"])
LABELS = {"labels": ["red", "blue", "green", "grey"]}


@pytest.fixture
def registry(registry_url: str) -> Iterator[SqlRegistry]:
    reg = open_registry(registry_url)
    yield reg
    reg.close()


def run_together(work: Callable[[int], Any], n: int = THREADS) -> list[Any]:
    """``work(0..n-1)`` on ``n`` threads released at once; re-raises the first failure."""
    barrier = threading.Barrier(n)

    def start(i: int) -> Any:
        barrier.wait(timeout=30)
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return [f.result(timeout=120) for f in [pool.submit(start, i) for i in range(n)]]


def alias_history(registry: SqlRegistry, model: str, alias: str) -> list[tuple[int, int | None]]:
    """``(version, previous version)`` of every recorded move of ``alias``, oldest first."""
    moves = [e for e in registry.history(model, limit=10_000) if e.alias == alias and e.to_version is not None]
    return [(e.to_version, e.from_version) for e in reversed(moves) if e.to_version is not None]


def assert_complete_chain(history: list[tuple[int, int | None]], current: int) -> None:
    """Each move names the version the one before it set, and the last is where the alias points."""
    assert history, "no alias move was recorded"
    assert history[0][1] is None
    for (before, _), (_, previous) in itertools.pairwise(history):
        assert previous == before
    assert history[-1][0] == current


def test_concurrent_first_pushes_of_one_model(registry: SqlRegistry, tmp_path: Path) -> None:
    models = ModelService(registry, LocalArtifactStore(tmp_path / "artifacts"), max_upload_bytes=1 << 20)
    files = [tiny_classifier(tmp_path / f"m{i}.onnx", seed=i) for i in range(THREADS)]
    shas = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert len(shas) == THREADS

    results = run_together(lambda i: models.push_file("cnn", files[i], LABELS, alias="staging"))

    assert all(created for _, created in results)
    assert sorted(v.version for v, _ in results) == list(range(1, THREADS + 1))
    assert {v.sha256 for v in registry.list_versions("cnn")} == shas
    aliases = registry.get_model("cnn").aliases
    assert aliases[PRODUCTION] in range(1, THREADS + 1)
    # push sets production only while the model has none: of the racing first pushes, exactly one did
    production = alias_history(registry, "cnn", PRODUCTION)
    assert production == [(aliases[PRODUCTION], None)]
    # every push moved staging to its own version exactly once
    staging = alias_history(registry, "cnn", "staging")
    assert sorted(v for v, _ in staging) == list(range(1, THREADS + 1))
    assert_complete_chain(staging, aliases["staging"])


def test_concurrent_moves_of_one_new_alias(registry: SqlRegistry) -> None:
    for i in range(THREADS):
        registry.add_version("m", f"{i:064x}", 10, M)

    run_together(lambda i: registry.set_alias("m", "canary", i + 1, actor=f"t{i}"))

    history = alias_history(registry, "m", "canary")
    assert sorted(v for v, _ in history) == list(range(1, THREADS + 1))
    assert_complete_chain(history, registry.get_model("m").aliases["canary"])


def sqlite_registry(tmp_path: Path, **options: Any) -> tuple[SqlRegistry, Path]:
    path = tmp_path / "registry.db"
    return open_registry(f"sqlite:///{path}", **options), path


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """A raw connection holding SQLite's write lock until it rolls back."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_write_transaction_takes_the_write_lock_before_its_first_read(tmp_path: Path) -> None:
    # A deferred transaction that reads, then writes after another writer committed, fails
    # at once with "database is locked"; BEGIN IMMEDIATE makes that interleaving impossible.
    registry, path = sqlite_registry(tmp_path)
    paused, resume = threading.Event(), threading.Event()

    @event.listens_for(registry.engine, "before_cursor_execute")
    def pause_after_first_read(*args: Any) -> None:
        statement: str = args[2]
        if threading.current_thread().name == "writer" and statement.startswith("SELECT") and not paused.is_set():
            paused.set()
            assert resume.wait(30)

    done: list[Any] = []
    writer = threading.Thread(
        target=lambda: done.append(registry.add_version("m", "a" * 64, 10, M)), name="writer", daemon=True
    )
    writer.start()
    assert paused.wait(30)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            other.execute("BEGIN IMMEDIATE")
        assert other.execute("SELECT count(*) FROM models").fetchone() == (0,)  # readers still read
    finally:
        other.close()  # first: should it hold the lock (the bug), the writer must not wait for it
        resume.set()
        writer.join(30)
    assert len(done) == 1
    assert done[0][0].version == 1
    registry.close()


def test_a_locked_write_retries_and_lands_once_the_lock_is_released(tmp_path: Path) -> None:
    retrying, released = threading.Event(), threading.Event()
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        retrying.set()
        assert released.wait(30)

    registry, path = sqlite_registry(
        tmp_path, busy_timeout_s=0.01, retry=WriteRetry(attempts=3, first_delay_s=0.05), sleep=sleep
    )
    registry.add_version("m", "a" * 64, 10, M)
    lock = hold_write_lock(path)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(registry.set_alias, "m", "production", 1, "alice")
        assert retrying.wait(30)
        assert lock.execute("SELECT count(*) FROM aliases").fetchone() == (0,)  # not landed yet
        assert registry.get_model("m").aliases == {}  # reads go on while the lock is held
        lock.execute("ROLLBACK")
        released.set()
        future.result(timeout=30)
    lock.close()
    assert delays == [0.05]
    assert registry.get_model("m").aliases == {"production": 1}
    registry.close()


def test_a_lock_never_released_answers_registry_busy_with_retry_after(tmp_path: Path) -> None:
    delays: list[float] = []
    retry = WriteRetry(attempts=4, first_delay_s=0.5, factor=2.0, max_delay_s=1.5, retry_after_s=2.0)
    registry, path = sqlite_registry(tmp_path, busy_timeout_s=0.01, retry=retry, sleep=delays.append)
    registry.add_version("m", "a" * 64, 10, M)
    lock = hold_write_lock(path)
    try:
        with pytest.raises(RegistryBusy) as caught:
            registry.add_version("m", "b" * 64, 10, M)
        assert registry.get_model("m").latest_version == 1  # reads are not refused
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert caught.value.status == 503
    assert caught.value.retry_after == 2.0
    assert "4 attempts" in caught.value.detail
    assert delays == [0.5, 1.0, 1.5]
    assert [v.version for v in registry.list_versions("m")] == [1]
    registry.close()


def test_concurrent_moves_with_the_same_expect_let_exactly_one_through(registry: SqlRegistry) -> None:
    for i in range(THREADS + 1):
        registry.add_version("m", f"{i:064x}", 10, M)
    registry.set_alias("m", PRODUCTION, 1)

    def move(i: int) -> bool | str:
        try:
            return registry.set_alias("m", PRODUCTION, i + 2, f"t{i}", expect=1, action="promote")
        except ConcurrentChange:
            return "refused"

    results = run_together(move)

    assert sorted(map(str, results)) == ["True"] + ["refused"] * (THREADS - 1)
    winner = results.index(True) + 2
    assert registry.get_model("m").aliases == {PRODUCTION: winner}
    assert alias_history(registry, "m", PRODUCTION) == [(1, None), (winner, 1)]


def test_a_poller_never_misses_a_change_that_commits_late(registry: SqlRegistry) -> None:
    # Each write creates a model of its own, so every seq names one model: a change that
    # committed after a poll had passed its seq would be missing from that poll's answer
    # (and from every later one, which starts after it).
    writes_per_thread = 12
    done = threading.Event()
    polls: list[tuple[int, int, set[str]]] = []  # (since, newest, changed)

    def poll() -> None:
        last = 0
        while True:
            finished = done.is_set()
            newest, changed = registry.changes_since(last)
            assert newest >= last
            polls.append((last, newest, changed))
            last = newest
            if finished:
                return

    def write(i: int) -> None:
        for k in range(writes_per_thread):
            registry.add_version(f"t{i}-{k}", f"{i:032x}{k:032x}", 10, M)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        run_together(write)
    finally:
        done.set()
        poller.join(60)
    assert not poller.is_alive()

    events = {e.seq: e.model for name in (m.name for m in registry.list_models()) for e in registry.history(name)}
    total = THREADS * writes_per_thread
    assert sorted(events) == list(range(1, total + 1))  # one number per change, none skipped
    for since, newest, changed in polls:
        assert changed == {events[seq] for seq in range(since + 1, newest + 1)}
    assert polls[-1][1] == total
    assert set().union(*(changed for _, _, changed in polls)) == set(events.values())
    assert len(polls) > 1


def test_a_push_racing_the_delete_and_sweep_of_the_last_user_of_its_bytes_keeps_them(registry: SqlRegistry) -> None:
    # A push stores its bytes first (outside the registry lock), then adds its row; the
    # other side deletes the last version using those bytes and sweeps at once. Whatever the
    # interleaving, a version that ends up naming the bytes has them stored.
    stored: set[str] = set()
    lock = threading.Lock()

    def ensure(sha: str) -> None:
        with lock:
            stored.add(sha)

    def remove(sha: str) -> None:
        with lock:
            stored.discard(sha)

    rounds = 12
    for r in range(rounds):
        sha = f"{r:064x}"
        ensure(sha)
        version, _ = registry.add_version("old", sha, 10, M, ensure_artifact=functools.partial(ensure, sha))

        def race(i: int, sha: str = sha, version: int = version.version) -> None:
            if i == 0:
                registry.delete_version("old", version)
                registry.sweep_artifacts(remove)
            else:
                ensure(sha)  # the push's commit: the bucket has the bytes (or gets them) here
                registry.add_version("new", sha, 10, M, ensure_artifact=functools.partial(ensure, sha))

        run_together(race, n=2)
        users = [v for name in ("old", "new") for v in registry.list_versions(name) if v.sha256 == sha]
        assert users, "the push made a version"
        assert sha in stored, f"round {r}: a version uses {sha[-4:]} but its bytes were removed"
        registry.sweep_artifacts(remove)
        assert sha in stored, f"round {r}: a later sweep removed bytes a version uses"
