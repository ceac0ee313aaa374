"""The blocking client."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from imaas.client.calls import (
    Call,
    canary_call,
    card_fields,
    comparison_call,
    delete_version_call,
    history_call,
    price_field,
    promote_call,
    rollback_call,
    shadow_call,
    status_call,
    update_model_call,
    update_version_call,
)
from imaas.client.common import (
    DEFAULT_URL,
    ImageSource,
    auth_headers,
    load_image,
    page_params,
    predict_request,
    push_request,
    raise_for_problem,
    transport_errors,
)
from imaas.client.keys import (
    audit_call,
    create_key_call,
    get_key_call,
    list_keys_call,
    revoke_key_call,
    rotate_key_call,
    usage_call,
)
from imaas.errors import ServerUnreachable
from imaas.schemas.keys import AuditPage, CreatedKeyInfo, KeyInfo, KeyLimitsInfo, UsageReport
from imaas.schemas.lifecycle import AliasChangeInfo, Comparison, History, ModelStatus
from imaas.schemas.rest import AliasRouteInfo, ModelDetail, ModelList, ModelSummary, PredictResponse, VersionInfo


class Client:
    """Talks to an imaas server.

    A server's problem is raised as the ``imaas.errors`` class its ``code`` names
    (``ModelNotFound``...); a server that never answers as ``TransportError``
    (``ServerUnreachable``, ``ServerTimeout``). No httpx exception leaves the client.
    ``api_key`` (default: ``$IMAAS_API_KEY``) goes with every request as ``Authorization: Bearer``; a repr shows only
    whether one is set, and no error ever quotes it.

    Example::

        with Client("http://127.0.0.1:8000", api_key=key, timeout=10) as c:
            top = c.predict("mobilenet-v2", "cat.jpg", top_k=1).results[0].predictions[0]
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = auth_headers(api_key)  # ValueError for a key no header can carry, without quoting it
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def __repr__(self) -> str:
        key = ", api_key=***" if "authorization" in self._http.headers else ""  # never the key itself
        return f"Client({str(self._http.base_url).rstrip('/')!r}{key})"

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, method: str, **kwargs: Any) -> httpx.Response:
        with transport_errors(self._http):
            return self._http.request(method, **kwargs)

    def _call(self, method: str, **kwargs: Any) -> Any:
        response = self._send(method, **kwargs)
        raise_for_problem(response)
        return response.json()

    def list_models(self, limit: int | None = None, after: str | None = None) -> ModelList:
        """``GET /v1/models``: one page (the server's default size unless ``limit``); pass the
        answer's ``next`` as ``after`` for the following page."""
        return ModelList.model_validate(self._call("GET", url="/v1/models", params=page_params(limit, after)))

    def get_model(self, name: str) -> ModelDetail:
        """``GET /v1/models/{name}``."""
        return ModelDetail.model_validate(self._call("GET", url=f"/v1/models/{name}"))

    def push_model(
        self, name: str, onnx_path: str | Path, manifest: str | None = None, alias: str | None = None
    ) -> VersionInfo:
        """Push an ONNX file with an optional manifest (YAML or JSON text)."""
        path = Path(onnx_path)
        with path.open("rb") as f:
            body = self._call(
                "POST",
                files={"model": (path.name, f, "application/octet-stream")},
                **push_request(name, manifest, alias),
            )
        return VersionInfo.model_validate(body)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version``."""
        self._call("PUT", url=f"/v1/models/{name}/aliases/{alias}", json={"version": version})

    def _run(self, call: Call) -> Any:
        response = self._send(call.method, **call.kwargs)
        raise_for_problem(response)
        return call.answer.model_validate(response.json()) if call.answer is not None else None

    def promote(self, name: str, version: int, alias: str = "production") -> AliasChangeInfo:
        """Load and warm ``version``, then move ``alias`` to it (409 with the reason if it cannot load)."""
        return self._run(promote_call(name, version, alias))  # type: ignore[no-any-return]

    def rollback(self, name: str, alias: str = "production") -> AliasChangeInfo:
        """Move ``alias`` back to the version its last change took it from."""
        return self._run(rollback_call(name, alias))  # type: ignore[no-any-return]

    def set_canary(self, name: str, version: int | None, weight: float, alias: str = "production") -> AliasRouteInfo:
        """Answer ``weight`` percent of ``alias``'s requests with ``version``; None ends the canary."""
        return self._run(canary_call(name, alias, version, weight))  # type: ignore[no-any-return]

    def set_shadow(
        self, name: str, target: tuple[str, int] | None, weight: float, alias: str = "production"
    ) -> AliasRouteInfo:
        """Copy ``weight`` percent of ``alias``'s requests to ``target`` (model, version); None ends it."""
        return self._run(shadow_call(name, alias, target, weight))  # type: ignore[no-any-return]

    def status(self, name: str) -> ModelStatus:
        """Each version's state, memory and last use on the server."""
        return self._run(status_call(name))  # type: ignore[no-any-return]

    def comparison(self, name: str) -> Comparison:
        """How shadows agree with the versions that answered."""
        return self._run(comparison_call(name))  # type: ignore[no-any-return]

    def history(self, name: str, limit: int | None = None, before: int | None = None) -> History:
        """Recorded changes, newest first (one page)."""
        return self._run(history_call(name, limit, before))  # type: ignore[no-any-return]

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        keep_latest: int | None = None,
        price_per_1000: Decimal | str | None = None,
        clear_price: bool = False,
    ) -> ModelSummary:
        """Edit a model's card (fields left None stay); ``price_per_1000`` sets the price of
        1,000 images (a decimal), ``clear_price`` removes it (the task's price applies)."""
        fields = card_fields(description=description, tags=tags, keep_latest=keep_latest)
        fields |= price_field(price_per_1000, clear_price)
        return self._run(update_model_call(name, fields))  # type: ignore[no-any-return]

    def update_version(
        self, name: str, version: int, *, description: str | None = None, tags: dict[str, str] | None = None
    ) -> VersionInfo:
        """Edit a version's description or tags."""
        fields = card_fields(description=description, tags=tags)
        return self._run(update_version_call(name, version, fields))  # type: ignore[no-any-return]

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version (409 ``version_in_use`` while an alias, canary or shadow points at it)."""
        self._run(delete_version_call(name, version))

    def create_key(
        self,
        name: str,
        scopes: list[str],
        *,
        models: list[str] | None = None,
        expires_at: datetime | None = None,
        limits: KeyLimitsInfo | None = None,
    ) -> CreatedKeyInfo:
        """Create an API key (needs ``keys:admin``); the answer's ``secret`` is shown this once.

        ``models``: names or shell patterns the key may use (None: every model);
        ``expires_at``: a time with a time zone; ``limits``: rate limit, quotas, free tier.
        A key can give no scope or model its creator lacks (``Forbidden``).

        Example::

            made = c.create_key("ci", ["infer"], models=["team-a-*"], limits=KeyLimitsInfo(rps=5))
            made.secret  # "imaas_..." : store it now
        """
        return self._run(create_key_call(name, scopes, models, expires_at, limits))  # type: ignore[no-any-return]

    def list_keys(self) -> list[KeyInfo]:
        """Every API key, oldest first, revoked and expired ones included (never a secret)."""
        return (self._run(list_keys_call())).keys  # type: ignore[no-any-return]

    def get_key(self, key_id: str) -> KeyInfo:
        """One API key by id (``KeyNotFound`` when there is none)."""
        return self._run(get_key_call(key_id))  # type: ignore[no-any-return]

    def revoke_key(self, key_id: str) -> KeyInfo:
        """Revoke an API key now; returns it as revoked (``Conflict`` for the last admin key)."""
        return self._run(revoke_key_call(key_id))  # type: ignore[no-any-return]

    def rotate_key(self, key_id: str, grace_s: float = 0) -> CreatedKeyInfo:
        """A new key replacing ``key_id``, which keeps working ``grace_s`` seconds more."""
        return self._run(rotate_key_call(key_id, grace_s))  # type: ignore[no-any-return]

    def usage(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> UsageReport:
        """Units and cost per key, model, version, task and UTC day, ``start`` to ``end`` inclusive.

        Without ``usage:read`` the server answers with the caller's own usage only.
        """
        return self._run(usage_call(key_id, model, start, end))  # type: ignore[no-any-return]

    def audit(
        self,
        *,
        limit: int = 100,
        before: int | None = None,
        key_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
    ) -> AuditPage:
        """One page of the audit log, newest first (needs ``keys:admin``); pass the answer's
        ``next`` as ``before`` for the following page."""
        return self._run(audit_call(limit, before, key_id, action, since))  # type: ignore[no-any-return]

    def predict(
        self,
        model: str,
        images: ImageSource | list[ImageSource],
        *,
        top_k: int | None = None,
        version: int | None = None,
        alias: str | None = None,
        routing_key: str | None = None,
    ) -> PredictResponse:
        """Run ``model`` on one image (path or bytes) or a list of them."""
        items = images if isinstance(images, list) else [images]
        encoded = [load_image(i) for i in items]
        body = self._call("POST", **predict_request(model, encoded, top_k, version, alias, routing_key))
        return PredictResponse.model_validate(body)

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200; ``False`` too while nothing answers at the URL.

        So a loop can wait for a server that is still starting. A server that accepts but
        does not answer still raises ``ServerTimeout``.
        """
        try:
            return self._send("GET", url="/readyz").status_code == 200
        except ServerUnreachable:
            return False
