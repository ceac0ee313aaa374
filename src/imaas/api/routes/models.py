"""Model catalog: list, describe, push versions, move aliases."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from imaas.api.deps import PUSH, READ, WRITE, Principal, services
from imaas.api.openapi import AliasName, ModelName, problem_responses
from imaas.api.routes import segments  # noqa: F401  (registers the imaas_model path convertor)
from imaas.domain import ALIAS_RE, MAX_VERSION, AliasRoute, ModelRecord, ModelVersion, check_name
from imaas.errors import (
    Conflict,
    InvalidManifest,
    InvalidModel,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    RegistryBusy,
    RegistryUnavailable,
    VersionNotFound,
    VersionNotLoadable,
)
from imaas.schemas.rest import AliasRouteInfo, ModelDetail, ModelList, ModelSummary, VersionInfo, price_text
from imaas.services.container import Services

router = APIRouter(prefix="/v1/models", tags=["models"])


# a registry write can collide with another, find it locked, or not reach it
WRITE_ERRORS = (Conflict, RegistryBusy, RegistryUnavailable)


WARM_ERRORS = (VersionNotLoadable, ModelNotReady)  # a version that cannot load, or still loads


def route_info(route: AliasRoute, p: Principal | None = None) -> AliasRouteInfo:
    """Wire form of an alias's route; a shadow on a model ``p`` does not see is left out
    (a key limited to some models learns no other model's name from a route)."""
    if p is not None and route.shadow_model is not None and not p.sees(route.shadow_model):
        route = dataclasses.replace(route, shadow_model=None, shadow_version=None, shadow_weight=0.0)
    return AliasRouteInfo(
        alias=route.alias,
        version=route.version,
        canary_version=route.canary_version,
        canary_weight=route.canary_weight,
        shadow_model=route.shadow_model,
        shadow_version=route.shadow_version,
        shadow_weight=route.shadow_weight,
    )


def summary(record: ModelRecord, p: Principal | None = None) -> ModelSummary:
    """Wire form of a model record, as ``p`` may see it."""
    return ModelSummary(
        name=record.name,
        task=record.task,
        description=record.description,
        latest_version=record.latest_version,
        aliases=record.aliases,
        routes={a: route_info(r, p) for a, r in record.routes.items()},
        tags=record.tags,
        keep_latest=record.keep_latest,
        price_per_1000=price_text(record.price_per_1000),
        created_at=record.created_at,
    )


def version_info(v: ModelVersion, aliases: dict[str, int], svc: Services) -> VersionInfo:
    """Wire form of a version, with the aliases that point at it and its load state here."""
    state, failure = svc.inference.load_state(v.key)
    return VersionInfo(
        state=state,
        load_error=failure.reason if failure is not None else None,
        version=v.version,
        sha256=v.sha256,
        size_bytes=v.size_bytes,
        created_at=v.created_at,
        manifest=v.manifest,
        metrics=v.metrics,
        source=v.source,
        parent_version=v.parent_version,
        aliases=sorted(a for a, n in aliases.items() if n == v.version),
        description=v.description,
        tags=v.tags,
    )


@router.get("", response_model=ModelList, summary="List models", responses=problem_responses(InvalidRequest))
async def list_models(
    limit: Annotated[int, Query(ge=1, le=1000, description="models per page")] = 100,
    after: Annotated[str | None, Query(description="the `next` of the previous page")] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(READ),
) -> ModelList:
    """Registered models by name with their latest version and aliases, a page at a time.

    A page costs the same however many models are registered (keyset paging on the name).
    """
    records = await asyncio.to_thread(svc.models.list_visible, p, limit + 1, after)
    more = len(records) > limit
    page = records[:limit]
    return ModelList(models=[summary(r, p) for r in page], next=page[-1].name if more else None)


@router.get(
    "/{name:imaas_model}",
    response_model=ModelDetail,
    summary="Describe a model",
    responses=problem_responses(InvalidRequest, ModelNotFound),
)
async def get_model(name: ModelName, svc: Services = Depends(services), p: Principal = Depends(READ)) -> ModelDetail:
    """A model with all its versions (newest first), manifests and aliases."""
    check_name(name)
    record, versions = await asyncio.to_thread(svc.models.describe, name)
    return ModelDetail(
        **summary(record, p).model_dump(), versions=[version_info(v, record.aliases, svc) for v in versions]
    )


@router.post(
    "/{name}/versions",
    response_model=VersionInfo,
    status_code=201,
    summary="Push a new version (ONNX file + manifest)",
    responses={
        200: {"model": VersionInfo, "description": "the same bytes and manifest were already registered: that version"},
        # a body that is not multipart/form-data lacks the `model` file: 400 invalid_request
        **problem_responses(InvalidRequest, InvalidModel, InvalidManifest, *WRITE_ERRORS, *WARM_ERRORS),
    },
)
async def push_version(
    name: ModelName,
    model: Annotated[UploadFile, File(description="the ONNX file")],
    manifest: Annotated[str | None, Form(description="manifest as YAML or JSON; omitted fields are inferred")] = None,
    alias: Annotated[
        str | None,
        Form(
            description="also promote the new version to this alias (it is loaded and warmed first)",
            json_schema_extra={"pattern": ALIAS_RE.pattern},
        ),
    ] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(PUSH),
) -> Any:
    """Validate the ONNX graph and manifest, store the file by sha256 and register a version.

    The first version of a model becomes its ``production`` version. A push never changes
    what an existing alias serves, unless ``alias`` asks for it: then the new version is
    promoted (loaded, warmed, then swapped in). Pushing identical bytes and manifest again
    is idempotent: the existing version is returned with 200.
    """
    check_name(name)
    if alias is not None and not ALIAS_RE.fullmatch(alias):
        raise InvalidRequest(f"invalid alias {alias!r}")
    source = f"upload:{model.filename or 'model.onnx'}"
    version, created = await svc.lifecycle.push(name, model.file, manifest, source=source, alias=alias, actor=p.actor)
    if created or alias is not None:
        await svc.audit.record(p, "version.push", f"{name}@{version.version}", sha256=version.sha256, alias=alias)
    record = await asyncio.to_thread(svc.models.get_model, name)
    body = version_info(version, record.aliases, svc).model_dump(mode="json")
    return JSONResponse(body, status_code=201 if created else 200)


@router.put(
    "/{name}/aliases/{alias}",
    response_model=ModelSummary,
    summary="Point an alias at a version (warmed first)",
    responses=problem_responses(InvalidRequest, ModelNotFound, VersionNotFound, *WRITE_ERRORS, *WARM_ERRORS),
)
async def set_alias(
    name: ModelName,
    alias: AliasName,
    version: Annotated[int, Body(embed=True, ge=1, le=MAX_VERSION)],
    svc: Services = Depends(services),
    p: Principal = Depends(WRITE),
) -> ModelSummary:
    """Move ``alias`` (e.g. ``staging``) to ``version`` as a promote does: the version is
    loaded and answers one inference first, then the alias moves atomically."""
    check_name(name)
    if not ALIAS_RE.fullmatch(alias):
        raise InvalidRequest(f"invalid alias {alias!r}")
    await svc.lifecycle.promote(name, version, alias, p.actor, action="alias")
    await svc.audit.record(p, "alias.set", f"{name}:{alias}", version=version)
    return summary(await asyncio.to_thread(svc.models.get_model, name), p)
