"""The blocking client."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from imaas.client.common import (
    DEFAULT_URL,
    ImageSource,
    load_image,
    page_params,
    predict_request,
    push_request,
    raise_for_problem,
    transport_errors,
)
from imaas.errors import ServerUnreachable
from imaas.schemas.rest import ModelDetail, ModelList, PredictResponse, VersionInfo


class Client:
    """Talks to an imaas server.

    A server's problem is raised as the ``imaas.errors`` class its ``code`` names
    (``ModelNotFound``...); a server that never answers as ``TransportError``
    (``ServerUnreachable``, ``ServerTimeout``). No httpx exception leaves the client.

    Example::

        with Client("http://127.0.0.1:8000", timeout=10) as c:
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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

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

    def predict(
        self,
        model: str,
        images: ImageSource | list[ImageSource],
        *,
        top_k: int | None = None,
        version: int | None = None,
        alias: str | None = None,
    ) -> PredictResponse:
        """Run ``model`` on one image (path or bytes) or a list of them."""
        items = images if isinstance(images, list) else [images]
        encoded = [load_image(i) for i in items]
        body = self._call("POST", **predict_request(model, encoded, top_k, version, alias))
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
