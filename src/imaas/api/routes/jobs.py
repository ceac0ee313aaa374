"""Training jobs: submit, list, follow (Server-Sent Events), read the log, cancel, plots.

``GET /v1/jobs/{job_id}/events`` streams the job's events as SSE (``event: state |
progress | epoch | log``, ``id:`` the event's number, ``data:`` its JSON) from the one
after ``Last-Event-ID`` (or ``?after=``), and ends once the job is over and every event was
sent, so a client that reconnects misses nothing and one that follows a finished job gets
its whole history and an end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import FileResponse, PlainTextResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from imaas.api.deps import JOBS, Principal, services
from imaas.api.openapi import problem_responses
from imaas.domain import Job, JobEvent, JobState
from imaas.errors import (
    DatasetNotFound,
    InvalidField,
    InvalidRequest,
    JobNotFound,
    ModelForbidden,
    NotFound,
    Overloaded,
)
from imaas.schemas.jobs import JobCreate, JobEventInfo, JobInfo, JobList, JobStateName, describe_event
from imaas.services.container import Services

router = APIRouter(prefix="/v1/jobs", tags=["training jobs"])

JOB_ID_PATTERN = r"^job_[a-z0-9]{12}$"
JobId = Annotated[str, Path(description="the job's id", json_schema_extra={"pattern": JOB_ID_PATTERN})]
POLL_S = 0.5
# one event of the stream (its fields as the SSE format carries them): ``data`` is a JobEventInfo as JSON
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["state", "progress", "epoch", "log"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["event", "id", "data"],
}
PING_S = 15


def job_info(job: Job) -> JobInfo:
    """Wire form of a job."""
    return JobInfo(
        id=job.id,
        kind=job.kind,
        state=job.state.value,
        model=job.model,
        dataset=job.dataset,
        config=job.config,
        description=job.description,
        created_at=job.created_at,
        created_by=job.created_by,
        started_at=job.started_at,
        finished_at=job.finished_at,
        heartbeat_at=job.heartbeat_at,
        worker=job.worker,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        progress=job.progress,
        result=job.result,
        error=job.error,
    )


def event_info(event: JobEvent) -> JobEventInfo:
    """Wire form of a job event."""
    return JobEventInfo(seq=event.seq, at=event.at, kind=event.kind, data=event.data)


def log_line(event: JobEvent) -> str:
    """One line of the job log for an event: its time and ``describe_event`` ("" for progress)."""
    text = describe_event(event.kind, event.data)
    return "" if text is None else f"{event.at.strftime('%Y-%m-%d %H:%M:%S')} {text}"


@router.post(
    "",
    response_model=JobInfo,
    status_code=202,
    summary="Train a model on a dataset version",
    responses=problem_responses(InvalidRequest, InvalidField, DatasetNotFound, ModelForbidden),
)
async def submit_job(body: JobCreate, svc: Services = Depends(services), p: Principal = Depends(JOBS)) -> JobInfo:
    """Queue a training job; a worker (``imaas worker``) runs it. The trained version is pushed
    to ``model`` with the ``staging`` alias, with its test metrics, plots and lineage."""
    job = await asyncio.to_thread(svc.training.submit, p, body.dataset, body.model, body.config, body.description)
    await svc.audit.record(p, "job.submit", job.id, model=job.model, dataset=job.dataset)
    return job_info(job)


@router.get("", response_model=JobList, summary="List jobs", responses=problem_responses(InvalidRequest))
async def list_jobs(
    state: Annotated[list[JobStateName] | None, Query(description="only jobs in these states")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    svc: Services = Depends(services),
    p: Principal = Depends(JOBS),
) -> JobList:
    """Jobs newest first (those training a model the key sees)."""
    states = [JobState(s) for s in state] if state else None
    jobs = await asyncio.to_thread(svc.training.list_jobs, p, states, limit)
    return JobList(jobs=[job_info(j) for j in jobs])


@router.get("/{job_id}", response_model=JobInfo, summary="One job", responses=problem_responses(JobNotFound))
async def get_job(job_id: JobId, svc: Services = Depends(services), p: Principal = Depends(JOBS)) -> JobInfo:
    """A job's state, latest progress and, once over, its result or error."""
    return job_info(await asyncio.to_thread(svc.training.get, p, job_id))


@router.post(
    "/{job_id}/cancel", response_model=JobInfo, summary="Cancel a job", responses=problem_responses(JobNotFound)
)
async def cancel_job(job_id: JobId, svc: Services = Depends(services), p: Principal = Depends(JOBS)) -> JobInfo:
    """A queued job is cancelled at once; a running one stops at its next training step (its
    state turns ``cancelled`` then). A finished job is answered as it is."""
    job = await asyncio.to_thread(svc.training.cancel, p, job_id)
    await svc.audit.record(p, "job.cancel", job.id)
    return job_info(job)


@router.get(
    "/{job_id}/log",
    response_class=PlainTextResponse,
    summary="A job's log as text",
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(JobNotFound)},
)
async def job_log(job_id: JobId, svc: Services = Depends(services), p: Principal = Depends(JOBS)) -> str:
    """State changes, epochs and log lines, one per line, oldest first."""
    lines: list[str] = []
    after = 0
    while True:
        events = await asyncio.to_thread(svc.training.events, p, job_id, after)
        lines += [line for line in map(log_line, events) if line]
        if len(events) < 1000:
            return "\n".join(lines) + ("\n" if lines else "")
        after = events[-1].seq


@router.get(
    "/{job_id}/events",
    summary="Follow a job (Server-Sent Events)",
    responses={
        200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}, "description": "the event stream"},
        **problem_responses(JobNotFound, Overloaded),
    },
)
async def job_events(
    job_id: JobId,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="send events numbered above this")] = 0,
    last_event_id: Annotated[
        str | None, Header(description="the SSE reconnection point (overrides after)", max_length=12)
    ] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(JOBS),
) -> Any:
    """The job's events from ``after`` (or ``Last-Event-ID``), then new ones as they come;
    the stream ends after the event that makes the job final."""
    if last_event_id is not None:
        after = int(last_event_id) if last_event_id.isascii() and last_event_id.isdigit() else after
    await asyncio.to_thread(svc.training.get, p, job_id)  # 404 before the stream starts
    release = svc.training.open_stream()  # 429 past jobs.max_streams

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            async for event in follow():
                yield event
        finally:
            release()

    async def follow() -> AsyncIterator[ServerSentEvent]:
        cursor = after
        while svc.auth.still_valid(p):  # a key revoked or expired while it watches ends the stream
            events = await asyncio.to_thread(svc.training.events, p, job_id, cursor)
            for e in events:
                cursor = e.seq
                data = json.dumps(event_info(e).model_dump(mode="json"))
                yield ServerSentEvent(data=data, event=e.kind, id=str(e.seq))
            if not events:
                job = await asyncio.to_thread(svc.training.get, p, job_id)
                if job.state.final:
                    tail = await asyncio.to_thread(svc.training.events, p, job_id, cursor)
                    if not tail:
                        return
                    continue
                await asyncio.sleep(POLL_S)

    return EventSourceResponse(stream(), ping=PING_S, background=BackgroundTask(release))


@router.get(
    "/{job_id}/plots/{plot}.png",
    response_class=FileResponse,
    summary="A finished job's confusion matrix or training curves (PNG)",
    responses={200: {"content": {"image/png": {}}}, **problem_responses(JobNotFound, NotFound)},
)
async def job_plot(
    job_id: JobId,
    plot: Annotated[
        str,
        Path(
            description="confusion or curves",
            json_schema_extra={"enum": ["confusion", "curves"], "pattern": "^(confusion|curves)$"},
        ),
    ],
    svc: Services = Depends(services),
    p: Principal = Depends(JOBS),
) -> FileResponse:
    """The confusion matrix of the test split, or the loss and accuracy curves by epoch."""
    path = await asyncio.to_thread(svc.training.plot, p, job_id, plot)
    return FileResponse(path, media_type="image/png")
