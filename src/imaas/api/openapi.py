"""The OpenAPI description at ``/openapi.json``, exact enough for client generators and gateways.

FastAPI derives most of the document from the routes. This module declares what it cannot
see, once, for every route to reuse:

* error responses built from the error classes in ``imaas.errors`` (``problem_responses``
  for ``/v1`` and the probes: RFC 9457 ``application/problem+json``; ``oip_responses`` for
  ``/v2``: the protocol's ``{"error": ...}`` as ``application/json``, 422 folded into 400),
  with ``Retry-After`` on 429 and 503;
* path parameters with the patterns the server enforces (``ModelName``, ``ModelRefPath``...);
* component schemas that routes reference by hand (the predict request bodies), sized from
  the server's settings.

``install`` then completes the generated document: the body-limit 413 on every operation
(the middleware answers it before routing), ``X-Request-ID`` on every response, and
FastAPI's 422 validation response replaced by the 400 ``invalid_request`` this server sends.

Example::

    @router.get("/{name}", responses=problem_responses(InvalidRequest, ModelNotFound))
    async def get_model(name: ModelName) -> ModelDetail: ...
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import FastAPI, Path
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from imaas.api.auth import is_public
from imaas.domain import ALIAS_RE, MAX_VERSION, NAME_RE
from imaas.errors import (
    AliasNotFound,
    DeadlineExceeded,
    ImaasError,
    InferenceFailed,
    InsufficientScope,
    InvalidCredentials,
    InvalidRequest,
    KeyExpired,
    KeyRevoked,
    MalformedCredentials,
    MissingCredentials,
    ModelForbidden,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    VersionNotFound,
)
from imaas.schemas.collections import AddItems, SearchQuery
from imaas.schemas.oip import InferenceRequest, InferenceResponse, OipError, Ready
from imaas.schemas.rest import PredictRequest, Problem
from imaas.settings import Settings

Responses = dict[int | str, dict[str, Any]]

PROBLEM_JSON = "application/problem+json"
REF_PREFIX = "#/components/schemas/"
RETRY_STATUSES = (429, 503)  # the errors with these statuses always carry retry_after

# Naming a model: a bad name or reference, or nothing by that name, version or alias.
LOOKUP_ERRORS = (InvalidRequest, ModelNotFound, VersionNotFound, AliasNotFound)
# Running one: a full queue, a model that cannot load (yet), a failed batch, a missed deadline.
SERVING_ERRORS = (Overloaded, ModelNotReady, InferenceFailed, DeadlineExceeded)

_NAME = NAME_RE.pattern.strip("^$")
_ALIAS = ALIAS_RE.pattern.strip("^$")
# name, name@version or name:alias (domain.ModelRef). A pattern cannot say "up to MAX_VERSION", so it
# allows versions of up to 15 digits, without leading zeros (the server also takes those, and up to 2**53-1).
MODEL_REF_PATTERN = f"^{_NAME}(@[1-9][0-9]{{0,14}}|:{_ALIAS})?$"

ModelName = Annotated[
    str,
    Path(description="model name", json_schema_extra={"pattern": NAME_RE.pattern}, examples=["mobilenet-v2"]),
]
AliasName = Annotated[
    str, Path(description="alias name", json_schema_extra={"pattern": ALIAS_RE.pattern}, examples=["production"])
]
ModelRefPath = Annotated[
    str,
    Path(
        description="model name, optionally with `@<version>` or `:<alias>` (default: the production alias)",
        json_schema_extra={"pattern": MODEL_REF_PATTERN},
        examples=["mobilenet-v2"],
    ),
]
VersionPath = Annotated[
    str,
    Path(
        description="version number",
        json_schema_extra={"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
        examples=[1],
    ),
]

REQUEST_ID_HEADER: dict[str, Any] = {
    "description": "the caller's X-Request-ID when it is 1-128 printable characters, else one the server made",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}
RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "whole seconds to wait before retrying",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": REF_PREFIX + name}


def problem_responses(*errors: type[ImaasError]) -> Responses:
    """``responses=`` entries for a ``/v1`` route: each status its ``errors`` can take, as RFC 9457 problems."""
    return _responses(errors, PROBLEM_JSON, "Problem", oip=False)


def oip_responses(*errors: type[ImaasError]) -> Responses:
    """``responses=`` entries for a ``/v2`` route: the protocol's ``{"error": ...}``, 422 answered as 400."""
    return _responses(errors, "application/json", "OipError", oip=True)


def _responses(errors: Iterable[type[ImaasError]], media_type: str, schema: str, *, oip: bool) -> Responses:
    by_status: dict[int, list[type[ImaasError]]] = {}
    for cls in errors:
        status = 400 if oip and cls.status == 422 else cls.status
        by_status.setdefault(status, []).append(cls)
    out: Responses = {}
    for status, group in sorted(by_status.items()):
        entry: dict[str, Any] = {
            "description": "; ".join(f"{cls.title} (`{cls.code}`)" for cls in group),
            "content": {media_type: {"schema": ref(schema)}},
        }
        if status in RETRY_STATUSES:
            entry["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
        out[status] = entry
    return out


def predict_upload_schema(max_images: int) -> dict[str, Any]:
    """The multipart body of a predict call: one file part per image (any part name is read)."""
    return {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "minItems": 1,
                "maxItems": max_images,
                "description": "the image files (JPEG, PNG, WebP, ...)",
            }
        },
    }


def _components(settings: Settings) -> dict[str, Any]:
    """Schemas that routes reference by name but FastAPI does not generate."""
    models: list[tuple[type[BaseModel], Any]] = [
        (Problem, "serialization"),
        (OipError, "serialization"),
        (Ready, "serialization"),
        (PredictRequest, "validation"),
        (AddItems, "validation"),
        (SearchQuery, "validation"),
        (InferenceRequest, "validation"),
        (InferenceResponse, "serialization"),
    ]
    _, doc = models_json_schema(models, ref_template=REF_PREFIX + "{model}")
    schemas: dict[str, Any] = doc["$defs"]
    max_images = settings.server.max_images_per_request
    schemas["PredictRequest"]["properties"]["images"]["maxItems"] = max_images
    schemas["PredictUpload"] = predict_upload_schema(max_images)
    max_items = settings.collections.max_items
    schemas["AddItems"]["properties"]["items"]["maxItems"] = max_items
    schemas["SearchQuery"]["properties"]["k"]["maximum"] = settings.collections.max_k
    return schemas


AUTH_ERRORS = (MissingCredentials, MalformedCredentials, InvalidCredentials, KeyRevoked, KeyExpired)
KEY_LIMIT_ERRORS = (RateLimited, QuotaExceeded)
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "an imaas API key (`imaas_<id>_<secret>`); the first start writes an admin key to "
    "`$IMAAS_HOME/admin.key`",
}
RATELIMIT_HEADERS: dict[str, Any] = {
    "RateLimit": {
        "description": 'the most constrained limit the request touched (IETF draft): `"policy";r=remaining;t=reset`',
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'the key\'s limits the request touched: `"rps";q=burst;w=1`, `"day";q=images;w=86400`...',
        "schema": {"type": "string"},
    },
}


def _secure(path: str, operation: dict[str, Any], render: Any) -> None:
    """Declare the bearer key, the 401s, the 403 and the key's own 429s on a protected operation."""
    operation["security"] = [{"bearer": []}]
    responses: dict[str, Any] = operation.setdefault("responses", {})
    errors: list[type[ImaasError]] = [*AUTH_ERRORS, InsufficientScope, *KEY_LIMIT_ERRORS]
    if path.endswith("/versions") and "post" in operation.get("operationId", "").lower():
        errors.append(ModelForbidden)
    for status, entry in render(*errors).items():
        current = responses.get(str(status))
        if current is None:
            responses[str(status)] = entry
        else:  # the route's own errors of that status (e.g. 429 overloaded), and the key's
            current["description"] = f"{current['description']}; {entry['description']}"
        if status == 429:
            responses[str(status)].setdefault("headers", {}).update(RATELIMIT_HEADERS)
        if status == 401:
            responses[str(status)].setdefault("headers", {})["WWW-Authenticate"] = {
                "description": 'the scheme to authenticate with: `Bearer realm="imaas"`',
                "required": True,
                "schema": {"type": "string"},
            }


def complete(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Finish FastAPI's document in place: components, 413 everywhere, 400 for validation,
    X-Request-ID, and the API key on every operation but the public ones."""
    doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = BEARER
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in _components(settings).items():
        components.setdefault(name, schema)
    for path, operations in doc.get("paths", {}).items():
        oip = path.startswith("/v2")
        render = oip_responses if oip else problem_responses
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema")
            if validation == ref("HTTPValidationError"):  # FastAPI's; problems.py answers these 400
                del responses["422"]
                for status, entry in render(InvalidRequest).items():
                    responses.setdefault(str(status), entry)
            for status, entry in render(PayloadTooLarge).items():  # BodyLimit answers before routing
                responses.setdefault(str(status), entry)
            if settings.auth.enabled and not is_public(path):
                _secure(path, operation, render)
            for entry in responses.values():
                entry.setdefault("headers", {})["X-Request-ID"] = REQUEST_ID_HEADER
            operation["responses"] = dict(sorted(responses.items()))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return doc


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the completed document at ``/openapi.json`` (built once, on first request)."""
    generate = app.openapi
    built: dict[str, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        if "doc" not in built:
            built["doc"] = complete(generate(), settings)
        return built["doc"]

    app.openapi = openapi  # type: ignore[method-assign]
