"""The asyncio client."""

from __future__ import annotations

import asyncio
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
)
from imaas.schemas.rest import ModelDetail, ModelList, PredictResponse, VersionInfo


class AsyncClient:
    """Async twin of ``Client``."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, **kwargs)
        raise_for_problem(response)
        return response.json()

    async def list_models(self, limit: int | None = None, after: str | None = None) -> ModelList:
        """``GET /v1/models``: one page (the server's default size unless ``limit``); pass the
        answer's ``next`` as ``after`` for the following page."""
        params = page_params(limit, after)
        return ModelList.model_validate(await self._call("GET", url="/v1/models", params=params))

    async def get_model(self, name: str) -> ModelDetail:
        """``GET /v1/models/{name}``."""
        return ModelDetail.model_validate(await self._call("GET", url=f"/v1/models/{name}"))

    async def push_model(
        self, name: str, onnx_path: str | Path, manifest: str | None = None, alias: str | None = None
    ) -> VersionInfo:
        """Push an ONNX file with an optional manifest (YAML or JSON text)."""
        path = Path(onnx_path)
        f = await asyncio.to_thread(path.read_bytes)
        body = await self._call(
            "POST",
            files={"model": (path.name, f, "application/octet-stream")},
            **push_request(name, manifest, alias),
        )
        return VersionInfo.model_validate(body)

    async def predict(
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
        body = await self._call("POST", **predict_request(model, encoded, top_k, version, alias))
        return PredictResponse.model_validate(body)
