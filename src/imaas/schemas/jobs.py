"""Wire models of training jobs (``/v1/jobs``), shared by the server and the SDK."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from imaas.schemas.training import TrainConfig


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``#/$defs/...`` reference replaced by its definition (and
    ``$defs`` dropped), so it can sit inside another document (the OpenAPI description)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk({**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    return out


# Documented as a TrainConfig but taken as a mapping: the server validates it itself, so a bad
# hyperparameter is a 422 ``invalid_field`` naming ``config.<field>`` (not a 400 for the body).
TrainConfigBody = Annotated[dict[str, Any], WithJsonSchema(inline_refs(TrainConfig.model_json_schema()))]

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
"""The states a job never leaves."""
PLOTS = ("confusion", "curves")
"""The PNGs a succeeded job has (``/v1/jobs/{id}/plots/{plot}.png``)."""

JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
DATASET_REF_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}(@[0-9]{1,9})?$"


class JobCreate(BaseModel):
    """What to train: a model from a dataset version, with a configuration."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        description="dataset name (its newest version) or name@version", pattern=DATASET_REF_PATTERN
    )
    model: str = Field(description="the model the trained version is pushed to", pattern=NAME_PATTERN)
    config: TrainConfigBody = Field(
        default_factory=dict,
        description="a TrainConfig: every field has a default (the job stores the whole configuration it ran with)",
    )
    description: str = Field("", max_length=1000)


class JobInfo(BaseModel):
    """A job: its state, progress and outcome."""

    id: str
    kind: str
    state: JobStateName
    model: str
    dataset: str = Field(description="the dataset version it trains on (name@version)")
    config: dict[str, Any]
    description: str = ""
    created_at: datetime
    created_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker: str | None = None
    attempts: int = Field(0, description="workers that took it up (more than 1: resumed after a worker died)")
    cancel_requested: bool = False
    progress: dict[str, Any] = Field(
        default_factory=dict,
        description="latest: epoch, epochs, step, steps, train/validation loss and accuracy, images_per_s, eta_s",
    )
    result: dict[str, Any] = Field(
        default_factory=dict, description="once succeeded: the version registered, test accuracy, plots"
    )
    error: str | None = Field(None, description="why it failed (or was cancelled)")


class JobList(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobInfo]


class JobEventInfo(BaseModel):
    """One event of a job (``state``, ``progress``, ``epoch`` or ``log``); the SSE stream sends
    these as ``event: <kind>``, ``id: <seq>``, ``data: <this JSON>``."""

    seq: int
    at: datetime
    kind: str
    data: dict[str, Any]


def _number(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def describe_event(kind: str, data: dict[str, Any]) -> str | None:
    """The human line of a job's log for an event (None for ``progress``: it moves a bar, it
    is not a line). The server's ``/log`` and the CLI's ``jobs watch`` print the same lines.

    Example::

        describe_event("state", {"state": "failed", "reason": "x"})  # 'state failed reason=x'
    """
    if kind == "log":
        return str(data.get("message", ""))
    if kind == "epoch":
        return (
            f"epoch {data.get('epoch')}/{data.get('epochs')}: train loss {_number(data.get('train_loss'))} "
            f"acc {_number(data.get('train_accuracy'))}, validation loss {_number(data.get('val_loss'))} "
            f"acc {_number(data.get('val_accuracy'))}, {_number(data.get('images_per_s'), '.0f')} images/s"
        )
    if kind == "state":
        extra = "".join(f" {k}={v}" for k, v in data.items() if k != "state")
        return f"state {data.get('state')}{extra}"
    return None
