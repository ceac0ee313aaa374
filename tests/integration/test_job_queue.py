"""The persistent job queue (registry/jobs.py) on SQLite and PostgreSQL: claiming in order and
exactly once, taking over from a dead worker, attempts, cancel, release and the numbered log."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from imaas.domain import Job, JobState
from imaas.errors import Conflict, JobNotFound
from imaas.registry.jobs import Reported, SqlJobs
from imaas.registry.sql import SqlRegistry, open_registry
from imaas.registry.tables import utcnow

MAX_ATTEMPTS = 3


@pytest.fixture
def registry(registry_url: str) -> Iterator[SqlRegistry]:
    registry = open_registry(registry_url)
    yield registry
    registry.close()


@pytest.fixture
def jobs(registry: SqlRegistry) -> SqlJobs:
    return SqlJobs(registry)


def fresh() -> datetime:
    """A ``stale_before`` no heartbeat of a live test is older than: nothing running is stale."""
    return utcnow() - timedelta(hours=1)


def all_stale() -> datetime:
    """A ``stale_before`` in the future: every running job counts as having lost its worker."""
    return utcnow() + timedelta(hours=1)


def create(jobs: SqlJobs, job_id: str) -> Job:
    return jobs.create(job_id, "train", "digits", "mnist@1", {"epochs": 1}, created_by="alice")


def claim(jobs: SqlJobs, worker: str, stale_before: datetime | None = None, max_attempts: int = MAX_ATTEMPTS) -> Job:
    job = jobs.claim(worker, stale_before=stale_before or fresh(), max_attempts=max_attempts)
    assert job is not None, f"{worker} found nothing to claim"
    return job


def test_the_oldest_queued_job_is_claimed_first(jobs: SqlJobs) -> None:
    # ids sort the other way round from creation, so only the creation time can give this order
    created = [create(jobs, job_id) for job_id in ("job_c", "job_b", "job_a")]
    assert created[0].created_at < created[1].created_at < created[2].created_at
    taken = [claim(jobs, f"w{i}") for i in range(3)]
    assert [j.id for j in taken] == ["job_c", "job_b", "job_a"]
    assert jobs.claim("w3", stale_before=fresh(), max_attempts=MAX_ATTEMPTS) is None
    first = jobs.get("job_c")
    assert (first.state, first.worker, first.attempts) == (JobState.RUNNING, "w0", 1)
    assert first.started_at is not None
    assert first.heartbeat_at is not None
    assert first.started_at >= created[0].created_at


def test_a_claimed_job_with_a_fresh_heartbeat_is_not_claimed_again(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    claim(jobs, "w1")
    jobs.beat("job_a", "w1")
    assert jobs.claim("w2", stale_before=fresh(), max_attempts=MAX_ATTEMPTS) is None
    job = jobs.get("job_a")
    assert (job.state, job.worker, job.attempts) == (JobState.RUNNING, "w1", 1)


def test_concurrent_claims_from_two_registries_take_each_job_exactly_once(
    registry_url: str, jobs: SqlJobs
) -> None:
    ids = [f"job_{i:02d}" for i in range(20)]
    for job_id in ids:
        create(jobs, job_id)
    registries = [open_registry(registry_url) for _ in range(2)]
    try:
        # four claimers: two threads on each of two registries (separate engines and pools)
        claimers = [(f"w{i}", SqlJobs(registries[i % 2])) for i in range(4)]
        got: dict[str, list[str]] = {name: [] for name, _ in claimers}
        errors: list[BaseException] = []
        start = threading.Barrier(len(claimers))

        def drain(name: str, queue: SqlJobs) -> None:
            try:
                start.wait(timeout=10)
                while (job := queue.claim(name, stale_before=fresh(), max_attempts=MAX_ATTEMPTS)) is not None:
                    assert job.worker == name
                    got[name].append(job.id)
            except BaseException as exc:  # reported below: an exception in a thread fails nothing by itself
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=c) for c in claimers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
    finally:
        for r in registries:
            r.close()
    taken = [job_id for names in got.values() for job_id in names]
    assert sorted(taken) == ids  # all 20, none twice
    for name, names in got.items():
        for job_id in names:
            job = jobs.get(job_id)
            assert (job.state, job.worker, job.attempts) == (JobState.RUNNING, name, 1)


def test_a_job_whose_worker_stopped_beating_is_taken_over(jobs: SqlJobs) -> None:
    first = create(jobs, "job_a")
    dead = claim(jobs, "host:111")
    again = claim(jobs, "host:222", stale_before=all_stale())
    assert again.id == first.id
    assert (again.state, again.worker, again.attempts) == (JobState.RUNNING, "host:222", 2)
    assert again.started_at == dead.started_at  # the job started with its first worker
    assert again.heartbeat_at is not None
    assert dead.heartbeat_at is not None
    assert again.heartbeat_at > dead.heartbeat_at
    logs = [e.data["message"] for e in jobs.events("job_a") if e.kind == "log"]
    assert len(logs) == 1
    assert "host:111" in logs[0]
    assert "host:222" in logs[0]
    states = [e.data for e in jobs.events("job_a") if e.kind == "state"]
    assert states[-1] == {"state": "running", "worker": "host:222", "attempt": 2}


def test_at_max_attempts_a_stale_job_fails_and_the_next_one_is_claimed(jobs: SqlJobs) -> None:
    create(jobs, "job_old")
    create(jobs, "job_new")
    claim(jobs, "host:111")  # job_old, attempt 1 of 1
    nxt = claim(jobs, "host:222", stale_before=all_stale(), max_attempts=1)
    assert nxt.id == "job_new"
    failed = jobs.get("job_old")
    assert failed.state is JobState.FAILED
    assert failed.error is not None
    assert "host:111" in failed.error
    assert "workers took it up once" in failed.error
    assert failed.finished_at is not None
    assert failed.worker == "host:111"
    assert failed.attempts == 1
    last = jobs.events("job_old")[-1]
    assert (last.kind, last.data) == ("state", {"state": "failed", "reason": failed.error})
    with pytest.raises(Conflict):
        jobs.beat("job_old", "host:111")


def test_a_worker_that_lost_its_job_can_neither_beat_nor_finish_it(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    claim(jobs, "host:111")
    claim(jobs, "host:222", stale_before=all_stale())
    before = jobs.events("job_a")
    with pytest.raises(Conflict):
        jobs.beat("job_a", "host:111", {"epoch": 9}, [("log", {"message": "late"}, utcnow())])
    with pytest.raises(Conflict):
        jobs.finish("job_a", "host:111", JobState.SUCCEEDED, result={"version": 1})
    with pytest.raises(Conflict):
        jobs.release("job_a", "host:111", "shutting down")
    job = jobs.get("job_a")
    assert (job.state, job.worker, job.progress, job.result) == (JobState.RUNNING, "host:222", {}, {})
    assert jobs.events("job_a") == before  # nothing the old worker sent was written
    done = jobs.finish("job_a", "host:222", JobState.SUCCEEDED, result={"version": 1})
    assert (done.state, done.result) == (JobState.SUCCEEDED, {"version": 1})
    with pytest.raises(Conflict):  # an ended job is nobody's
        jobs.beat("job_a", "host:222")


def test_cancelling_a_queued_job_ends_it_at_once(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    cancelled = jobs.cancel("job_a", "alice")
    assert (cancelled.state, cancelled.cancel_requested) == (JobState.CANCELLED, True)
    assert cancelled.finished_at is not None
    assert jobs.claim("w1", stale_before=all_stale(), max_attempts=MAX_ATTEMPTS) is None
    assert jobs.get("job_a").state is JobState.CANCELLED
    last = jobs.events("job_a")[-1]
    assert (last.kind, last.data) == ("state", {"state": "cancelled", "reason": "cancelled by alice"})
    again = jobs.cancel("job_a", "bob")  # a finished job is returned unchanged
    assert again == cancelled
    assert jobs.events("job_a")[-1] == last


def test_cancelling_a_running_job_asks_its_worker_through_the_next_beat(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    claim(jobs, "w1")
    assert jobs.beat("job_a", "w1").cancel_requested is False
    asked = jobs.cancel("job_a", "alice")
    assert (asked.state, asked.cancel_requested, asked.finished_at) == (JobState.RUNNING, True, None)
    assert jobs.beat("job_a", "w1").cancel_requested is True
    assert any(e.kind == "log" and "alice" in e.data["message"] for e in jobs.events("job_a"))
    done = jobs.finish("job_a", "w1", JobState.CANCELLED, error="cancelled")
    assert done.state is JobState.CANCELLED


def test_a_stale_job_whose_cancel_was_asked_is_cancelled_not_run_again(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    claim(jobs, "host:111")
    jobs.cancel("job_a", "alice")
    assert jobs.claim("host:222", stale_before=all_stale(), max_attempts=MAX_ATTEMPTS) is None
    job = jobs.get("job_a")
    assert (job.state, job.attempts, job.error) == (JobState.CANCELLED, 1, None)


def test_a_released_job_is_queued_again_and_claimable_at_once(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    claim(jobs, "host:111")
    released = jobs.release("job_a", "host:111", "worker host:111 stopped")
    assert (released.state, released.worker, released.heartbeat_at) == (JobState.QUEUED, None, None)
    assert released.finished_at is None
    last = jobs.events("job_a")[-1]
    assert (last.kind, last.data) == ("state", {"state": "queued", "reason": "worker host:111 stopped"})
    again = claim(jobs, "host:222")  # no staleness needed: it is queued
    assert (again.id, again.worker, again.attempts) == ("job_a", "host:222", 1)  # a release is not a death


def test_events_are_numbered_per_job_without_gaps(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    create(jobs, "job_b")
    claim(jobs, "w1")  # job_a
    t0 = utcnow() - timedelta(seconds=5)
    reported: list[Reported] = [
        ("epoch", {"epoch": 1}, t0),
        ("log", {"message": "hello"}, t0),
        ("epoch", {"epoch": 2}, t0),
    ]
    jobs.beat("job_a", "w1", {"epoch": 2}, reported)
    jobs.cancel("job_b", "alice")
    jobs.beat("job_a", "w1", None, [("log", {"message": "bye"}, utcnow())])
    jobs.finish("job_a", "w1", JobState.SUCCEEDED, result={"ok": True})

    a = jobs.events("job_a")
    # created, claimed, three reported, one more, finished
    assert [e.seq for e in a] == list(range(1, 8))
    assert [e.kind for e in a] == ["state", "state", "epoch", "log", "epoch", "log", "state"]
    assert all(e.job_id == "job_a" for e in a)
    assert [(e.kind, e.data, e.at) for e in a[2:5]] == reported  # kept as reported, with their own times
    assert a[-1].data == {"state": "succeeded"}
    assert jobs.get("job_a").progress == {"epoch": 2}
    b = jobs.events("job_b")
    assert [(e.seq, e.data["state"]) for e in b] == [(1, "queued"), (2, "cancelled")]
    for k in range(len(a) + 1):
        assert jobs.events("job_a", after=k) == a[k:]
    assert [e.seq for e in jobs.events("job_a", after=1, limit=2)] == [2, 3]


def test_unknown_job_ids_are_not_found(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    calls: list[Callable[[], object]] = [
        lambda: jobs.get("job_nosuch"),
        lambda: jobs.events("job_nosuch"),
        lambda: jobs.beat("job_nosuch", "w1"),
        lambda: jobs.finish("job_nosuch", "w1", JobState.FAILED, error="x"),
        lambda: jobs.release("job_nosuch", "w1", "x"),
        lambda: jobs.cancel("job_nosuch", "alice"),
    ]
    for call in calls:
        with pytest.raises(JobNotFound, match="job_nosuch"):
            call()


def test_a_taken_id_is_a_conflict_and_a_job_created_claimed_is_never_another_worker_s(jobs: SqlJobs) -> None:
    create(jobs, "job_a")
    with pytest.raises(Conflict):
        create(jobs, "job_a")
    assert [j.id for j in jobs.list_jobs()] == ["job_a"]
    taken = jobs.create("job_b", "train", "digits", "mnist@1", {}, claim_for="installer")
    assert (taken.id, taken.state, taken.worker, taken.attempts) == ("job_b", JobState.RUNNING, "installer", 1)
    assert claim(jobs, "other").id == "job_a"  # the queued one; job_b was never queued for others
    assert jobs.claim("other", stale_before=fresh(), max_attempts=MAX_ATTEMPTS) is None
    assert [e.data["state"] for e in jobs.events("job_b")] == ["queued", "running"]


def test_a_limited_key_lists_its_jobs_however_many_newer_jobs_of_others_there_are(jobs: SqlJobs) -> None:
    from typing import Any

    from imaas.domain import Principal
    from imaas.services.training import TrainingService

    for i in range(3):
        jobs.create(f"job_mine{i:08d}", "train", "team-a-cnn", "ds@1", {})
    for i in range(450):  # newer than every one of team a's
        jobs.create(f"job_other{i:07d}", "train", "other-cnn", "ds@1", {})
    none: Any = None
    service = TrainingService(jobs, none, none)
    team_a = Principal("k1", "team a", models=("team-a-*",))
    listed = service.list_jobs(team_a, limit=10)  # more than 10 x 10 newer jobs of others in front
    assert sorted(j.id for j in listed) == [f"job_mine{i:08d}" for i in range(3)]
    assert len(service.list_jobs(Principal("k2", "admin"), limit=100)) == 100
