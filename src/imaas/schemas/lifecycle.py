"""Wire models of the lifecycle endpoints: promote, rollback, canary, shadow, status,
comparison, history and model cards. Shared by the API and the SDK."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, field_validator

from imaas.schemas.rest import LoadState

_ALIAS = r"^[a-z][a-z0-9_-]{0,31}$"
_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
_MAX_VERSION = 2**53 - 1
_PERCENT: dict[str, Any] = {"minimum": 0, "maximum": 100}
# what the registry accepts in a card (registry/fields.py): no NUL (PostgreSQL text cannot hold one)
_TEXT = r"^[^\x00]*$"
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TagValue = Annotated[str, StringConstraints(max_length=256, pattern=_TEXT)]
Tags = Annotated[
    dict[TagKey, TagValue],
    Field(
        max_length=50,
        description="replaces the tags; at most 50",
        # a key pattern would turn into patternProperties; the registry refuses a NUL in a key
        json_schema_extra={"propertyNames": {"minLength": 1, "maxLength": 64, "pattern": _TEXT}},
    ),
]

# A price per 1,000 images as a caller may write it (what the registry accepts: registry/fields.py):
# a decimal string from 0 to 1,000,000,000 with at most 6 places, or a JSON number, read as the
# shortest decimal that prints it (0.1 is 0.1; 0.30000000000000004 has 17 places and is refused).
MAX_PRICE = 1_000_000_000
PRICE_PATTERN = r"^(1000000000(\.0{1,6})?|[0-9]{1,9}(\.[0-9]{1,6})?)$"
_PRICE_RE = re.compile(PRICE_PATTERN)
Price = Annotated[
    Decimal,
    Field(ge=0, le=MAX_PRICE, decimal_places=6, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PRICE_PATTERN},
                {"type": "number", "minimum": 0, "maximum": MAX_PRICE, "multipleOf": 0.000001},
            ]
        }
    ),
]


class PromoteRequest(BaseModel):
    """Move an alias to a version once that version is loaded and has answered one inference."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=_MAX_VERSION)
    alias: str = Field("production", pattern=_ALIAS)


class RollbackRequest(BaseModel):
    """Move an alias back to the version its last change took it from."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field("production", pattern=_ALIAS)


class AliasChangeInfo(BaseModel):
    """What a promote or rollback did."""

    model: str
    alias: str
    from_version: int | None = Field(description="where the alias pointed before (null: it did not exist)")
    to_version: int
    moved: bool = Field(description="false when the alias already pointed there")


class CanaryRequest(BaseModel):
    """Answer ``weight`` percent of the alias's requests with ``version``."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=_MAX_VERSION, description="a version of the same model, not the alias's own")
    weight: float = Field(
        strict=True,
        description="percent of requests, 0-100; 100 completes the rollout, 0 ends it",
        json_schema_extra=_PERCENT,  # checked by the service: 422 invalid_field naming `weight`
    )


class ShadowRequest(BaseModel):
    """Copy ``weight`` percent of the alias's requests to a version that never answers callers."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, pattern=_NAME, description="another model of the same task; default this one")
    version: int = Field(ge=1, le=_MAX_VERSION)
    weight: float = Field(
        strict=True, description="percent of requests copied, 0-100; 0 ends the shadow", json_schema_extra=_PERCENT
    )


class VersionStatusInfo(BaseModel):
    """One version on the server that answered."""

    version: int
    state: LoadState
    reason: str | None = Field(None, description="why it failed to load (state failed)")
    memory_bytes: int | None = Field(
        None, description="resident memory the process grew by when its sessions were built (approximate)"
    )
    load_seconds: float | None = None
    loaded_at: datetime | None = None
    last_used_at: datetime | None = None
    pinned: bool = Field(description="kept loaded: an alias, canary or shadow points at it, or keep_latest")
    queue_depth: int | None = Field(None, description="requests waiting for a batch worker")


class ModelStatus(BaseModel):
    """Answer of ``GET /v1/models/{name}/status``: per version, on the server that answered."""

    model: str
    resident_bytes: int = Field(description="the whole server process's resident memory (RSS)")
    versions: list[VersionStatusInfo]


class LatencyInfo(BaseModel):
    """Latency of the last compared requests, in milliseconds."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    mean_ms: float | None = None


class PairInfo(BaseModel):
    """A serving version against its shadow."""

    version: int = Field(description="the serving version (of this model)")
    shadow_model: str
    shadow_version: int
    compared: int = Field(description="images both answered")
    agreement: float | None = Field(
        description="share of compared images on which they agree (classification: same top-1 class)"
    )
    dropped: int = Field(description="images not copied because the shadow queue was full")
    failed: int = Field(description="images the shadow could not answer")
    latency: LatencyInfo = Field(
        description="the serving version, per request, from its arrival to its answer (queueing included)"
    )
    shadow_latency: LatencyInfo = Field(
        description="the shadow, per request, from when its copy started to run (at low CPU priority)"
    )


class Comparison(BaseModel):
    """Answer of ``GET /v1/models/{name}/comparison`` (this server's figures since it started)."""

    model: str
    pairs: list[PairInfo]


class EventInfo(BaseModel):
    """One recorded change."""

    seq: int
    action: str = Field(description="push, alias, promote, rollback, canary, shadow, delete or edit")
    alias: str | None = None
    from_version: int | None = None
    to_version: int | None = None
    actor: str | None = None
    at: datetime
    detail: dict[str, Any] = Field(default_factory=dict)


class History(BaseModel):
    """Answer of ``GET /v1/models/{name}/history``: newest first."""

    model: str
    events: list[EventInfo]
    next: int | None = Field(None, description="pass as `before` for older events; null at the end")


class ModelCardUpdate(BaseModel):
    """Fields of a model's card to change; omitted fields stay."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=10_000, pattern=_TEXT)
    tags: Tags | None = None
    keep_latest: int | None = Field(
        None, ge=0, le=100, description="newest versions kept loaded", json_schema_extra={"type": "integer"}
    )
    price_per_1000: Price | None = Field(
        None,
        description=(
            'what 1,000 predicted images cost: a decimal string (exact, e.g. "1.50") or a number, from 0 to '
            "1000000000 with at most 6 decimal places; null clears it (the task's price applies again, else "
            "free); omitted: unchanged"
        ),
    )

    @field_validator("keep_latest", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true is not the integer 1
            raise ValueError("keep_latest must be an integer, not a boolean")
        return value

    @field_validator("price_per_1000", mode="before")
    @classmethod
    def _plain_decimal(cls, value: Any) -> Any:
        # Decimal() alone would also read " 2 ", "1_000", "1e3" and "NaN": the description promises less
        if isinstance(value, str) and not _PRICE_RE.fullmatch(value):
            raise ValueError(
                'price_per_1000 must be a decimal such as "1.50": digits, at most 6 decimal places, '
                "from 0 to 1000000000"
            )
        return value


class VersionCardUpdate(BaseModel):
    """Fields of a version's card to change; omitted fields stay."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=10_000, pattern=_TEXT)
    tags: Tags | None = None
