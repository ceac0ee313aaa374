"""The API-key, usage and audit calls of the SDK, written once for ``Client`` and ``AsyncClient``.

Each function returns a ``Call`` (see ``calls.py``). Request bodies are built from the wire
models of ``imaas.schemas.keys`` without validating them here: the server is the one judge
of a name, a scope or a limit, and answers a bad one with a problem naming the field.

Example::

    call = rotate_key_call("AB12CD34EF56", grace_s=3600)
    call.method, call.kwargs["url"], call.kwargs["json"]  # ('POST', '/v1/keys/AB12CD34EF56/rotate', {'grace_s': 3600})
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter

from imaas.client.calls import Call
from imaas.schemas.keys import AuditPage, CreatedKeyInfo, KeyInfo, KeyLimitsInfo, KeyList, UsageReport


def _key_url(key_id: str, suffix: str = "") -> str:
    # an id is base32, but a mistyped one must not reach another route ("../models")
    return f"/v1/keys/{quote(key_id, safe='')}{suffix}"


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def create_key_call(
    name: str,
    scopes: list[str],
    models: list[str] | None,
    expires_at: datetime | None,
    limits: KeyLimitsInfo | None,
) -> Call:
    """``POST /v1/keys`` (201, with the secret)."""
    # a plain body, unchecked here: the server names a bad field (a scope this SDK does not know, say)
    body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if models is not None:
        body["models"] = list(models)
    if expires_at is not None:
        body["expires_at"] = _DATETIME.dump_python(expires_at, mode="json")  # as pydantic writes it (Z for UTC)
    if limits is not None:
        body["limits"] = limits.model_dump(mode="json", exclude_none=True)
    return Call("POST", {"url": "/v1/keys", "json": body}, CreatedKeyInfo)


def list_keys_call() -> Call:
    """``GET /v1/keys``."""
    return Call("GET", {"url": "/v1/keys"}, KeyList)


def get_key_call(key_id: str) -> Call:
    """``GET /v1/keys/{id}``."""
    return Call("GET", {"url": _key_url(key_id)}, KeyInfo)


def revoke_key_call(key_id: str) -> Call:
    """``DELETE /v1/keys/{id}`` (200, with the revoked key)."""
    return Call("DELETE", {"url": _key_url(key_id)}, KeyInfo)


def rotate_key_call(key_id: str, grace_s: float = 0) -> Call:
    """``POST /v1/keys/{id}/rotate`` (201, with the new key's secret)."""
    return Call("POST", {"url": _key_url(key_id, "/rotate"), "json": {"grace_s": grace_s}}, CreatedKeyInfo)


def _day(value: date) -> str:
    return value.strftime("%Y-%m-%d")  # a datetime too: its UTC day is the caller's to choose


def usage_call(key_id: str | None, model: str | None, start: date | None, end: date | None) -> Call:
    """``GET /v1/usage`` with the filters given (days as ``YYYY-MM-DD``, both inclusive)."""
    params: dict[str, Any] = {"key_id": key_id, "model": model}
    params["start"] = _day(start) if start is not None else None
    params["end"] = _day(end) if end is not None else None
    return Call("GET", {"url": "/v1/usage", "params": _given(params)}, UsageReport)


def audit_call(limit: int, before: int | None, key_id: str | None, action: str | None, since: datetime | None) -> Call:
    """``GET /v1/audit`` (one page, newest first; pass the answer's ``next`` as ``before``)."""
    params: dict[str, Any] = {"limit": limit, "before": before, "key_id": key_id, "action": action}
    params["since"] = since.isoformat() if since is not None else None
    return Call("GET", {"url": "/v1/audit", "params": _given(params)}, AuditPage)


def _given(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
