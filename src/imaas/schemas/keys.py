"""Wire models of API keys, usage and the audit log (``/v1/keys``, ``/v1/usage``, ``/v1/audit``),
shared by the server and the SDK."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# what a key's name and model patterns may not hold: control characters, and the invisible
# ones that reorder or hide text (bidi overrides, zero-width, line separators), so a listing
# or the audit log shows what is there (the server checks the same patterns)
_HIDDEN = r"\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
KEY_NAME_PATTERN = f"^[^{_HIDDEN}]{{1,128}}$"


class ScopeName(StrEnum):
    """A scope, as the wire spells it (``imaas.domain.Scope``)."""

    INFER = "infer"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    KEYS_ADMIN = "keys:admin"
    USAGE_READ = "usage:read"
    JOBS = "jobs"
    DATASETS_READ = "datasets:read"
    DATASETS_WRITE = "datasets:write"
    COLLECTIONS_READ = "collections:read"
    COLLECTIONS_WRITE = "collections:write"


SCOPES_DOC = ", ".join(s.value for s in ScopeName)


MODEL_PATTERN_PATTERN = f"^[^\\s{_HIDDEN}]([^{_HIDDEN}]*[^\\s{_HIDDEN}])?$"
ModelPattern = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=MODEL_PATTERN_PATTERN)]


class KeyLimitsInfo(BaseModel):
    """A key's rate limit, image quotas (unset: unlimited) and monthly free tier."""

    model_config = ConfigDict(extra="forbid")

    rps: float | None = Field(None, gt=0, le=1_000_000, description="requests per second (token bucket)")
    burst: int | None = Field(None, ge=1, le=1_000_000_000, description="bucket size; default rps rounded up")
    images_per_day: int | None = Field(None, ge=1, le=10**15, description="predicted images per UTC day")
    images_per_month: int | None = Field(None, ge=1, le=10**15, description="predicted images per calendar month")
    free_images_per_month: int = Field(0, ge=0, le=10**15, description="images each month that cost nothing")

    @field_validator("rps", "burst", "images_per_day", "images_per_month", "free_images_per_month", mode="before")
    @classmethod
    def _numbers_only(cls, value: Any) -> Any:
        # JSON Schema counts 5.0 as an integer, but never true/false or "5" as a number
        if isinstance(value, bool | str):
            raise ValueError("must be a number")
        return value


class KeyCreate(BaseModel):
    """``POST /v1/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=KEY_NAME_PATTERN, description="who or what the key is for")
    scopes: list[ScopeName] = Field(min_length=1, max_length=16, description=f"some of: {SCOPES_DOC}")
    models: list[ModelPattern] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="model names or shell patterns (`team-a-*`) the key may use; others do not exist for it. "
        "Unset: every model",
    )
    expires_at: datetime | None = Field(None, description="when the key stops working (with a time zone)")
    limits: KeyLimitsInfo | None = None

    @field_validator("expires_at", mode="before")
    @classmethod
    def _time_text(cls, value: Any) -> Any:
        # an RFC 3339 string, as the schema says (pydantic alone would take 0 as 1970)
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("must be an RFC 3339 date-time string")
        return value


class KeyRotate(BaseModel):
    """``POST /v1/keys/{id}/rotate``."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("grace_s", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool | str):
            raise ValueError("must be a number of seconds")
        return value

    grace_s: float = Field(
        0, ge=0, le=90 * 86400, description="seconds the old key keeps working, so callers can switch"
    )


class KeyInfo(BaseModel):
    """An API key as listed: never its secret."""

    id: str = Field(description="the key's public id (the part after `imaas_`)")
    name: str
    scopes: list[str]
    models: list[str] | None = Field(description="model names or patterns the key is limited to; null: every model")
    limits: KeyLimitsInfo
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = Field(None, description="written in batches: up to a few seconds behind")
    created_by: str | None = None
    replaced_by: str | None = Field(None, description="the key a rotation made to replace this one")


class KeyList(BaseModel):
    """``GET /v1/keys``."""

    keys: list[KeyInfo]


class CreatedKeyInfo(BaseModel):
    """A key just created or rotated: ``secret`` is shown this once and never again."""

    key: KeyInfo
    secret: str = Field(description="the whole key to send as `Authorization: Bearer <secret>`")


class UsageRow(BaseModel):
    """One key's units on one model version and task in one UTC day, with what they cost."""

    key_id: str
    model: str
    version: int
    task: str
    day: date
    requests: int
    images: int
    compute_ms: float
    bytes_in: int
    free_images: int = Field(description="images covered by the key's monthly free tier")
    billable_images: int
    price_per_1000: str | None = Field(description="price per 1,000 images (decimal string); null: free")
    cost: str = Field(description="billable_images x price / 1000, as an exact decimal string")


class UsageTotals(BaseModel):
    """Sums over the rows of a usage report."""

    requests: int
    images: int
    billable_images: int
    cost: str


class UsageReport(BaseModel):
    """``GET /v1/usage``."""

    rows: list[UsageRow]
    total: UsageTotals


class AuditEntryInfo(BaseModel):
    """One privileged action."""

    id: int
    at: datetime
    key_id: str | None
    actor: str
    action: str = Field(description="e.g. key.create, key.revoke, version.push, alias.set, version.delete")
    target: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """``GET /v1/audit``: newest first; pass ``next`` as ``before`` for the next page."""

    entries: list[AuditEntryInfo]
    next: int | None = None
