"""Wire models of the REST API (``/v1``), shared by the server and the SDK."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from imaas.schemas.manifest import Manifest
from imaas.schemas.results import ClassificationResult, TaskResult
from imaas.schemas.results import Prediction as Prediction

ImageResult = ClassificationResult
"""The result of one image of a classification model (the name earlier releases used)."""


class PredictResponse(BaseModel):
    """Answer of ``POST /v1/models/{name}:predict``: one result per image, in request order,
    of the form of the model's ``task`` (``imaas.schemas.results``)."""

    model: str
    version: int = Field(description="the version that answered (an alias's canary answers its share)")
    task: str
    results: list[TaskResult]


# RFC 4648 base64 (standard alphabet, padded). Documentation only: the server decodes with
# ``base64.b64decode(validate=True)``, which also tolerates extra ``=`` after a full quantum.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class Base64Image(BaseModel):
    """An image carried in JSON."""

    data: str = Field(
        description="base64 of the encoded image file (JPEG, PNG, WebP, ...)",
        json_schema_extra={"pattern": BASE64_PATTERN, "contentEncoding": "base64"},
    )
    filename: str | None = None


class PredictRequest(BaseModel):
    """JSON body of a predict call (the alternative to a raw image body or multipart)."""

    images: list[Base64Image] = Field(min_length=1)
    top_k: int | None = Field(None, ge=1, le=1000, description="classification: classes per image")
    options: dict[str, str | int | float | bool] | None = Field(
        None,
        description="the task's options, as the query parameters name them (e.g. `score`, `iou` for "
        "detection); a query parameter of the same name wins",
        max_length=16,
    )


LoadState = Literal["ready", "loading", "failed", "draining", "unloaded"]


class VersionInfo(BaseModel):
    """One immutable version of a model, and whether this server has it loaded."""

    version: int
    sha256: str
    size_bytes: int
    created_at: datetime
    manifest: Manifest
    metrics: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    parent_version: int | None = None
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    state: LoadState = Field(
        "unloaded",
        description="on this server: ready (loaded), loading, failed, draining (finishing its requests "
        "before it is unloaded) or unloaded",
    )
    load_error: str | None = Field(None, description="why the last load failed (state failed)")


class AliasRouteInfo(BaseModel):
    """Where an alias sends traffic: its version, a canary answering ``canary_weight`` percent
    of requests, and a shadow receiving a copy of ``shadow_weight`` percent."""

    alias: str
    version: int
    canary_version: int | None = None
    canary_weight: float = 0.0
    shadow_model: str | None = None
    shadow_version: int | None = None
    shadow_weight: float = 0.0


# A price per 1,000 images as the API writes it: the fewest digits that say the exact value
# (no trailing zeros, no exponent): "1.5", "0.000001", "10", "0". The registry keeps at most
# 6 decimal places and at most 1,000,000,000 (registry/fields.py).
PRICE_OUT_PATTERN = r"^(0|[1-9][0-9]{0,9})(\.[0-9]{0,5}[1-9])?$"


def price_text(price: Decimal | None) -> str | None:
    """``price`` as the API writes it (see ``PRICE_OUT_PATTERN``); None stays None.

    >>> price_text(Decimal("1.500000")), price_text(Decimal("10.000000")), price_text(Decimal("0.000001"))
    ('1.5', '10', '0.000001')
    """
    if price is None:
        return None
    return f"{price.normalize():f}"  # normalize alone would write 10 as 1E+1; the f format never does


class ModelSummary(BaseModel):
    """A model in the catalog listing."""

    name: str
    task: str
    description: str = ""
    latest_version: int | None = None
    aliases: dict[str, int] = Field(default_factory=dict)
    routes: dict[str, AliasRouteInfo] = Field(
        default_factory=dict, description="per alias: its version and any canary and shadow"
    )
    tags: dict[str, str] = Field(default_factory=dict)
    keep_latest: int = Field(0, description="the newest versions kept loaded besides the aliased ones")
    price_per_1000: str | None = Field(
        None,
        description=(
            "what 1,000 predicted images of this model cost, as an exact decimal string without trailing "
            'zeros or exponent (e.g. "1.5", "0.000001"); null: the task\'s price from the server settings '
            "applies, else the model is free"
        ),
        json_schema_extra={"pattern": PRICE_OUT_PATTERN},
        examples=["1.5"],
    )
    created_at: datetime


class ModelList(BaseModel):
    """Answer of ``GET /v1/models``: one page of models by name."""

    models: list[ModelSummary]
    next: str | None = Field(None, description="pass as `after` for the next page; null on the last page")


class ModelDetail(ModelSummary):
    """Answer of ``GET /v1/models/{name}``: versions newest first, with manifests."""

    versions: list[VersionInfo]


class FailedLoad(BaseModel):
    """A production version that could not be loaded, and why."""

    model: str = Field(description="name@version")
    reason: str
    attempts: int


class Readiness(BaseModel):
    """Answer of ``GET /readyz``: 200 ``ready`` once warm-up is over, else 503 ``loading``.

    The probe needs no key; the lists name models, so they are filled only for a caller
    whose key has ``models:read`` (and only with the models it sees), empty otherwise."""

    status: Literal["ready", "loading"]
    loaded: list[str] = Field(description="name@version of every loaded version")
    missing: list[str] = Field(description="production versions not loaded yet, or `warm-up still running`")
    failed: list[FailedLoad] = Field(description="production versions whose load failed (retried with backoff)")


class Problem(BaseModel):
    """RFC 9457 problem details, with imaas' stable ``code`` and the request id."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    code: str
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None
