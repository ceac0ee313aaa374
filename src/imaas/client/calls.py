"""The lifecycle calls of the SDK, written once for ``Client`` and ``AsyncClient``.

Each function returns a ``Call``: the HTTP method, the httpx keyword arguments, and the
wire model the answer parses into; each client only sends it (blocking or not).

Example::

    call = promote_call("mobilenet-v2", 3, "production")
    call.method, call.kwargs["url"]  # ('POST', '/v1/models/mobilenet-v2/promote')
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from imaas.schemas.lifecycle import AliasChangeInfo, Comparison, History, ModelStatus
from imaas.schemas.rest import AliasRouteInfo, ModelSummary, VersionInfo


@dataclass(frozen=True)
class Call:
    """One request and the model its JSON answer parses into (None: no body)."""

    method: str
    kwargs: dict[str, Any]
    answer: type[BaseModel] | None


def promote_call(name: str, version: int, alias: str) -> Call:
    """``POST /v1/models/{name}/promote``."""
    return Call(
        "POST", {"url": f"/v1/models/{name}/promote", "json": {"version": version, "alias": alias}}, AliasChangeInfo
    )


def rollback_call(name: str, alias: str) -> Call:
    """``POST /v1/models/{name}/rollback``."""
    return Call("POST", {"url": f"/v1/models/{name}/rollback", "json": {"alias": alias}}, AliasChangeInfo)


def canary_call(name: str, alias: str, version: int | None, weight: float) -> Call:
    """``PUT`` (or, without a version, ``DELETE``) ``/v1/models/{name}/aliases/{alias}/canary``."""
    url = f"/v1/models/{name}/aliases/{alias}/canary"
    if version is None:
        return Call("DELETE", {"url": url}, AliasRouteInfo)
    return Call("PUT", {"url": url, "json": {"version": version, "weight": weight}}, AliasRouteInfo)


def shadow_call(name: str, alias: str, target: tuple[str, int] | None, weight: float) -> Call:
    """``PUT`` (or, without a target, ``DELETE``) ``/v1/models/{name}/aliases/{alias}/shadow``."""
    url = f"/v1/models/{name}/aliases/{alias}/shadow"
    if target is None:
        return Call("DELETE", {"url": url}, AliasRouteInfo)
    body = {"model": target[0], "version": target[1], "weight": weight}
    return Call("PUT", {"url": url, "json": body}, AliasRouteInfo)


def status_call(name: str) -> Call:
    """``GET /v1/models/{name}/status``."""
    return Call("GET", {"url": f"/v1/models/{name}/status"}, ModelStatus)


def comparison_call(name: str) -> Call:
    """``GET /v1/models/{name}/comparison``."""
    return Call("GET", {"url": f"/v1/models/{name}/comparison"}, Comparison)


def history_call(name: str, limit: int | None = None, before: int | None = None) -> Call:
    """``GET /v1/models/{name}/history`` (one page; pass the answer's ``next`` as ``before``)."""
    params = {k: v for k, v in {"limit": limit, "before": before}.items() if v is not None}
    return Call("GET", {"url": f"/v1/models/{name}/history", "params": params}, History)


def update_model_call(name: str, fields: dict[str, Any]) -> Call:
    """``PATCH /v1/models/{name}`` with the fields given."""
    return Call("PATCH", {"url": f"/v1/models/{name}", "json": fields}, ModelSummary)


def update_version_call(name: str, version: int, fields: dict[str, Any]) -> Call:
    """``PATCH /v1/models/{name}/versions/{version}`` with the fields given."""
    return Call("PATCH", {"url": f"/v1/models/{name}/versions/{version}", "json": fields}, VersionInfo)


def delete_version_call(name: str, version: int) -> Call:
    """``DELETE /v1/models/{name}/versions/{version}``."""
    return Call("DELETE", {"url": f"/v1/models/{name}/versions/{version}"}, None)


def price_field(price: Decimal | str | None, clear: bool) -> dict[str, Any]:
    """The price part of a card update: a decimal string, null to clear it, or nothing."""
    if clear and price is not None:
        raise ValueError("give a price or clear it, not both")
    if clear:
        return {"price_per_1000": None}
    return {} if price is None else {"price_per_1000": str(price)}


def card_fields(**fields: Any) -> dict[str, Any]:
    """The fields of a card update that were given (None means: keep)."""
    return {k: v for k, v in fields.items() if v is not None}
