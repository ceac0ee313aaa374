"""The persistent job queue in the registry database: jobs, their states and their events.

A worker takes a job with ``claim``: in one write transaction (under the registry lock, so
two workers never take the same job, on SQLite and PostgreSQL alike) it picks the oldest
``queued`` job, or a ``running`` one whose heartbeat is older than ``stale_before`` (its
worker died: the new worker resumes it from its checkpoint), and stamps itself on it. While
it runs, ``beat`` renews the heartbeat and tells the worker whether a cancel was asked and
whether the job is still its own; ``finish`` ends it. Every change adds a numbered event
(``job_events``), which is the job's log and what its event stream replays.

Example::

    jobs = SqlJobs(open_registry("sqlite:////tmp/imaas/registry.db"))
    job = jobs.create("job_3f5k2m7q9xab", "train", "digits", "mnist@1", {"epochs": 5})
    taken = jobs.claim("worker-1", stale_before=utcnow() - timedelta(seconds=30), max_attempts=3)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from imaas.domain import Job, JobEvent, JobState
from imaas.errors import Conflict, JobNotFound
from imaas.registry.fields import check_description
from imaas.registry.queries import aware
from imaas.registry.sql import SqlRegistry
from imaas.registry.tables import JobEventRow, JobRow, utcnow


def _maybe(dt: datetime | None) -> datetime | None:
    return aware(dt) if dt is not None else None


def to_job(row: JobRow) -> Job:
    """The domain form of a job row."""
    return Job(
        id=row.id,
        kind=row.kind,
        state=JobState(row.state),
        model=row.model,
        dataset=row.dataset,
        config=dict(row.config),
        created_at=aware(row.created_at),
        created_by=row.created_by,
        started_at=_maybe(row.started_at),
        finished_at=_maybe(row.finished_at),
        heartbeat_at=_maybe(row.heartbeat_at),
        worker=row.worker,
        attempts=row.attempts,
        cancel_requested=row.cancel_requested,
        progress=dict(row.progress or {}),
        result=dict(row.result or {}),
        error=row.error,
        description=row.description,
    )


Reported = tuple[str, dict[str, Any], datetime]
"""An event a worker reports: its kind, data and when it happened (it is written later, with a beat)."""


def _event(s: Any, row: JobRow, kind: str, data: dict[str, Any], at: datetime | None = None) -> None:
    row.last_event += 1
    s.add(JobEventRow(job_id=row.id, seq=row.last_event, at=at or utcnow(), kind=kind, data=data))


def _set_state(s: Any, row: JobRow, state: JobState, **data: Any) -> None:
    row.state = state.value
    if state.final:
        row.finished_at = utcnow()
    _event(s, row, "state", {"state": state.value, **{k: v for k, v in data.items() if v is not None}})


class SqlJobs:
    """The job tables of a ``SqlRegistry`` (its sessions, write lock and error translation)."""

    def __init__(self, registry: SqlRegistry) -> None:
        self.registry = registry

    def create(
        self,
        job_id: str,
        kind: str,
        model: str,
        dataset: str,
        config: dict[str, Any],
        *,
        created_by: str | None = None,
        description: str = "",
        claim_for: str | None = None,
    ) -> Job:
        """Queue a new job; ``Conflict`` when the id is taken (the caller draws another),
        ``InvalidField`` for a description too long or holding a NUL character. With
        ``claim_for`` the job is created already running for that worker, in the same
        transaction, so no other worker can take it first (``imaas zoo install``)."""
        check_description(description)

        def work(s: Any, _state: Any) -> Job:
            if s.get(JobRow, job_id) is not None:
                raise Conflict(f"a job with id {job_id!r} exists")
            row = JobRow(
                id=job_id,
                kind=kind,
                state=JobState.QUEUED.value,
                model=model,
                dataset=dataset,
                config=config,
                description=description,
                created_at=utcnow(),
                created_by=created_by,
                last_event=0,
                attempts=0,
                cancel_requested=False,
                progress={},
                result={},
            )
            s.add(row)
            s.flush()  # the job row before its first event (no ORM relationship orders them)
            _event(s, row, "state", {"state": JobState.QUEUED.value})
            if claim_for is not None:
                row.state, row.worker, row.attempts = JobState.RUNNING.value, claim_for, 1
                row.heartbeat_at = row.started_at = utcnow()
                _event(s, row, "state", {"state": JobState.RUNNING.value, "worker": claim_for, "attempt": 1})
            s.flush()
            return to_job(row)

        return self.registry._write(work, "queueing a job")

    def get(self, job_id: str) -> Job:
        """One job; ``JobNotFound`` when no job has that id."""
        with self.registry._session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            return to_job(row)

    def list_jobs(self, *, states: Sequence[JobState] | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs newest first, optionally only those in ``states``; ``limit`` of them after ``offset``."""
        with self.registry._session() as s:
            q = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit).offset(offset)
            if states:
                q = q.where(JobRow.state.in_([st.value for st in states]))
            return [to_job(r) for r in s.scalars(q)]

    def claim(self, worker: str, *, stale_before: datetime, max_attempts: int) -> Job | None:
        """Take the oldest job a worker may run, or None when there is none.

        A ``running`` job whose heartbeat is older than ``stale_before`` lost its worker: it
        is taken again (``attempts`` + 1, an event saying so) unless it already had
        ``max_attempts`` workers, in which case it fails with that reason and the next
        candidate is looked at. A queued job whose cancel was asked is never taken.
        """

        def work(s: Any, _state: Any) -> Job | None:
            while True:
                q = (
                    select(JobRow)
                    .where(
                        or_(
                            JobRow.state == JobState.QUEUED.value,
                            (JobRow.state == JobState.RUNNING.value) & (JobRow.heartbeat_at < stale_before),
                        )
                    )
                    .order_by(JobRow.created_at, JobRow.id)
                    .limit(1)
                )
                row = s.scalars(q).first()
                if row is None:
                    return None
                if row.state == JobState.RUNNING.value:
                    lost = f"worker {row.worker} stopped beating (last heartbeat {aware(row.heartbeat_at).isoformat()})"
                    if row.attempts >= max_attempts or row.cancel_requested:
                        runs = "once" if row.attempts == 1 else f"{row.attempts} times"
                        why = "cancelled" if row.cancel_requested else f"{lost}; workers took it up {runs}"
                        final = JobState.CANCELLED if row.cancel_requested else JobState.FAILED
                        row.error = None if row.cancel_requested else why
                        _set_state(s, row, final, reason=why)
                        continue
                    _event(s, row, "log", {"message": f"{lost}; {worker} takes the job up again"})
                row.state = JobState.RUNNING.value
                row.worker = worker
                row.attempts += 1
                row.heartbeat_at = utcnow()
                row.started_at = row.started_at or row.heartbeat_at
                _event(s, row, "state", {"state": JobState.RUNNING.value, "worker": worker, "attempt": row.attempts})
                s.flush()
                return to_job(row)

        return self.registry._write(work, "claiming a job")

    def beat(
        self, job_id: str, worker: str, progress: dict[str, Any] | None = None, events: Sequence[Reported] = ()
    ) -> Job:
        """Renew ``worker``'s heartbeat on the job, store its latest ``progress`` and append
        ``events``; returns the job (its ``cancel_requested`` is how a cancel reaches the
        worker). ``Conflict`` when the job is no longer this worker's (it went stale and
        another worker took it, or it ended): the caller must stop working on it."""

        def work(s: Any, _state: Any) -> Job:
            row = self._row(s, job_id)
            if row.state != JobState.RUNNING.value or row.worker != worker:
                raise Conflict(f"job {job_id} is no longer run by {worker} (state {row.state}, worker {row.worker})")
            row.heartbeat_at = utcnow()
            if progress is not None:
                row.progress = progress
            for kind, data, at in events:
                _event(s, row, kind, data, at)
            s.flush()
            return to_job(row)

        return self.registry._write(work, "recording a job's heartbeat")

    def finish(
        self,
        job_id: str,
        worker: str,
        state: JobState,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> Job:
        """End ``worker``'s job in a final ``state`` with its result or error (``Conflict``
        when it is no longer this worker's)."""
        if not state.final:
            raise ValueError(f"finish needs a final state, not {state.value}")

        def work(s: Any, _state: Any) -> Job:
            row = self._row(s, job_id)
            if row.state != JobState.RUNNING.value or row.worker != worker:
                raise Conflict(f"job {job_id} is no longer run by {worker} (state {row.state}, worker {row.worker})")
            row.result = result or {}
            row.error = error
            _set_state(s, row, state, reason=error)
            s.flush()
            return to_job(row)

        return self.registry._write(work, "finishing a job")

    def release(self, job_id: str, worker: str, reason: str) -> Job:
        """Give a running job back to the queue (its worker is shutting down): the next worker
        takes it at once and resumes it from its checkpoint. ``Conflict`` when not ``worker``'s."""

        def work(s: Any, _state: Any) -> Job:
            row = self._row(s, job_id)
            if row.state != JobState.RUNNING.value or row.worker != worker:
                raise Conflict(f"job {job_id} is no longer run by {worker} (state {row.state}, worker {row.worker})")
            row.worker = None
            row.heartbeat_at = None
            row.attempts -= 1  # given back, not lost: only workers that died count against max_attempts
            _set_state(s, row, JobState.QUEUED, reason=reason)
            s.flush()
            return to_job(row)

        return self.registry._write(work, "giving a job back to the queue")

    def cancel(self, job_id: str, actor: str) -> Job:
        """Cancel a job: a queued one at once; a running one is asked to stop (its worker
        ends it as ``cancelled`` at its next step). A finished job is returned unchanged."""

        def work(s: Any, _state: Any) -> Job:
            row = self._row(s, job_id)
            if row.state == JobState.QUEUED.value:
                row.cancel_requested = True
                row.error = f"cancelled by {actor}"
                _set_state(s, row, JobState.CANCELLED, reason=row.error)
            elif row.state == JobState.RUNNING.value and not row.cancel_requested:
                row.cancel_requested = True
                _event(s, row, "log", {"message": f"cancel asked by {actor}"})
            s.flush()
            return to_job(row)

        return self.registry._write(work, "cancelling a job")

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        """The job's events numbered above ``after``, oldest first (``JobNotFound`` when
        there is no such job)."""
        with self.registry._session() as s:
            self._row(s, job_id)
            q = (
                select(JobEventRow)
                .where(JobEventRow.job_id == job_id, JobEventRow.seq > after)
                .order_by(JobEventRow.seq)
                .limit(limit)
            )
            return [
                JobEvent(job_id=r.job_id, seq=r.seq, at=aware(r.at), kind=r.kind, data=dict(r.data))
                for r in s.scalars(q)
            ]

    @staticmethod
    def _row(s: Any, job_id: str) -> JobRow:
        row = s.get(JobRow, job_id)
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return row  # type: ignore[no-any-return]
