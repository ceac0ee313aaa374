"""The asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

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
from imaas.client.collections import (
    Item,
    add_call,
    build_index_call,
    create_collection_call,
    delete_items_call,
    drop_collection_call,
    get_collection_call,
    get_item_call,
    list_collections_call,
    search_call,
)
from imaas.client.common import (
    DEFAULT_URL,
    ImageSource,
    Option,
    auth_headers,
    image_accept,
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
from imaas.client.training import (
    MAX_RECONNECTS,
    ArchiveSource,
    Follow,
    Split,
    SseParser,
    cancel_job_call,
    get_dataset_call,
    get_dataset_version_call,
    get_job_call,
    job_event,
    job_log_call,
    job_plot_call,
    list_datasets_call,
    list_jobs_call,
    open_upload,
    push_dataset_call,
    train_call,
)
from imaas.errors import ServerUnreachable, TransportError
from imaas.schemas.collections import AddResult, CollectionInfo, DeleteResult, ItemOut, SearchResult
from imaas.schemas.datasets import DatasetDetail, DatasetPushResult, DatasetSummary, DatasetVersionInfo
from imaas.schemas.jobs import FINAL_STATES, JobEventInfo, JobInfo
from imaas.schemas.keys import AuditPage, CreatedKeyInfo, KeyInfo, KeyLimitsInfo, UsageReport
from imaas.schemas.lifecycle import AliasChangeInfo, Comparison, History, ModelStatus
from imaas.schemas.rest import AliasRouteInfo, ModelDetail, ModelList, ModelSummary, PredictResponse, VersionInfo
from imaas.schemas.training import TrainConfig


class AsyncClient:
    """Async twin of ``Client``: the same methods and errors, as coroutines (``aclose`` for ``close``).

    Example::

        async with AsyncClient("http://127.0.0.1:8000", api_key=key) as c:
            if await c.ready():
                result = await c.predict("mobilenet-v2", "cat.jpg", top_k=1)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = auth_headers(api_key)  # ValueError for a key no header can carry, without quoting it
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        key = ", api_key=***" if "authorization" in self._http.headers else ""  # never the key itself
        return f"AsyncClient({str(self._http.base_url).rstrip('/')!r}{key})"

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, method: str, **kwargs: Any) -> httpx.Response:
        with transport_errors(self._http):
            return await self._http.request(method, **kwargs)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        response = await self._send(method, **kwargs)
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

    async def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version``."""
        await self._call("PUT", url=f"/v1/models/{name}/aliases/{alias}", json={"version": version})

    async def _run(self, call: Call) -> Any:
        response = await self._send(call.method, **call.kwargs)
        raise_for_problem(response)
        return call.answer.model_validate(response.json()) if call.answer is not None else None

    async def promote(self, name: str, version: int, alias: str = "production") -> AliasChangeInfo:
        """Load and warm ``version``, then move ``alias`` to it (409 with the reason if it cannot load)."""
        return await self._run(promote_call(name, version, alias))  # type: ignore[no-any-return]

    async def rollback(self, name: str, alias: str = "production") -> AliasChangeInfo:
        """Move ``alias`` back to the version its last change took it from."""
        return await self._run(rollback_call(name, alias))  # type: ignore[no-any-return]

    async def set_canary(
        self, name: str, version: int | None, weight: float, alias: str = "production"
    ) -> AliasRouteInfo:
        """Answer ``weight`` percent of ``alias``'s requests with ``version``; None ends the canary."""
        return await self._run(canary_call(name, alias, version, weight))  # type: ignore[no-any-return]

    async def set_shadow(
        self, name: str, target: tuple[str, int] | None, weight: float, alias: str = "production"
    ) -> AliasRouteInfo:
        """Copy ``weight`` percent of ``alias``'s requests to ``target`` (model, version); None ends it."""
        return await self._run(shadow_call(name, alias, target, weight))  # type: ignore[no-any-return]

    async def status(self, name: str) -> ModelStatus:
        """Each version's state, memory and last use on the server."""
        return await self._run(status_call(name))  # type: ignore[no-any-return]

    async def comparison(self, name: str) -> Comparison:
        """How shadows agree with the versions that answered."""
        return await self._run(comparison_call(name))  # type: ignore[no-any-return]

    async def history(self, name: str, limit: int | None = None, before: int | None = None) -> History:
        """Recorded changes, newest first (one page)."""
        return await self._run(history_call(name, limit, before))  # type: ignore[no-any-return]

    async def update_model(
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
        return await self._run(update_model_call(name, fields))  # type: ignore[no-any-return]

    async def update_version(
        self, name: str, version: int, *, description: str | None = None, tags: dict[str, str] | None = None
    ) -> VersionInfo:
        """Edit a version's description or tags."""
        fields = card_fields(description=description, tags=tags)
        return await self._run(update_version_call(name, version, fields))  # type: ignore[no-any-return]

    async def delete_version(self, name: str, version: int) -> None:
        """Delete a version (409 ``version_in_use`` while an alias, canary or shadow points at it)."""
        await self._run(delete_version_call(name, version))

    async def create_key(
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
        return await self._run(create_key_call(name, scopes, models, expires_at, limits))  # type: ignore[no-any-return]

    async def list_keys(self) -> list[KeyInfo]:
        """Every API key, oldest first, revoked and expired ones included (never a secret)."""
        return (await self._run(list_keys_call())).keys  # type: ignore[no-any-return]

    async def get_key(self, key_id: str) -> KeyInfo:
        """One API key by id (``KeyNotFound`` when there is none)."""
        return await self._run(get_key_call(key_id))  # type: ignore[no-any-return]

    async def revoke_key(self, key_id: str) -> KeyInfo:
        """Revoke an API key now; returns it as revoked (``Conflict`` for the last admin key)."""
        return await self._run(revoke_key_call(key_id))  # type: ignore[no-any-return]

    async def rotate_key(self, key_id: str, grace_s: float = 0) -> CreatedKeyInfo:
        """A new key replacing ``key_id``, which keeps working ``grace_s`` seconds more."""
        return await self._run(rotate_key_call(key_id, grace_s))  # type: ignore[no-any-return]

    async def usage(
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
        return await self._run(usage_call(key_id, model, start, end))  # type: ignore[no-any-return]

    async def audit(
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
        return await self._run(audit_call(limit, before, key_id, action, since))  # type: ignore[no-any-return]

    # -- datasets ----------------------------------------------------------------------------------
    async def push_dataset(
        self,
        name: str,
        archive: ArchiveSource,
        *,
        split: Split = (0.8, 0.1, 0.1),
        seed: int = 0,
        description: str = "",
    ) -> DatasetPushResult:
        """Upload a zip or tar of labelled images as a version of dataset ``name`` (see
        ``Client.push_dataset``); the file is read on a thread, chunk by chunk.

        Example::

            pushed = await c.push_dataset("digits", "digits.zip", seed=1)
        """
        upload = await asyncio.to_thread(open_upload, archive)
        try:
            call = push_dataset_call(name, upload, split, seed, description, self._http.timeout)
            content = upload.head if upload.rest is None else upload.achunks()
            response = await self._send(call.method, content=content, **call.kwargs)
        finally:
            await asyncio.to_thread(upload.close)
        raise_for_problem(response)
        return DatasetPushResult.model_validate(response.json())

    async def list_datasets(self) -> list[DatasetSummary]:
        """Every dataset the key sees, by name, with its newest version (needs ``datasets:read``)."""
        return (await self._run(list_datasets_call())).datasets  # type: ignore[no-any-return]

    async def get_dataset(self, name: str) -> DatasetDetail:
        """A dataset and its versions, newest first, each with its summary and cleaning report."""
        return await self._run(get_dataset_call(name))  # type: ignore[no-any-return]

    async def get_dataset_version(self, name: str, version: int) -> DatasetVersionInfo:
        """One dataset version: classes, counts per split, input size, statistics, report.

        Example::

            v = await c.get_dataset_version("digits", 1)
        """
        return await self._run(get_dataset_version_call(name, version))  # type: ignore[no-any-return]

    # -- training jobs -----------------------------------------------------------------------------
    async def train(
        self,
        dataset: str,
        model: str,
        config: TrainConfig | dict[str, Any] | None = None,
        description: str = "",
    ) -> JobInfo:
        """Queue a job training ``model`` on ``dataset`` (see ``Client.train``).

        Example::

            job = await c.train("digits", "digits-cnn", TrainConfig(epochs=20))
        """
        return await self._run(train_call(dataset, model, config, description))  # type: ignore[no-any-return]

    async def list_jobs(self, state: list[str] | None = None, limit: int = 100) -> list[JobInfo]:
        """Jobs newest first, only those in ``state`` (e.g. ``["queued", "running"]``) when given."""
        return (await self._run(list_jobs_call(state, limit))).jobs  # type: ignore[no-any-return]

    async def get_job(self, job_id: str) -> JobInfo:
        """A job's state, latest progress and, once over, its result or error."""
        return await self._run(get_job_call(job_id))  # type: ignore[no-any-return]

    async def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        return await self._run(cancel_job_call(job_id))  # type: ignore[no-any-return]

    async def job_log(self, job_id: str) -> str:
        """The job's log as text: state changes, epochs and log lines, oldest first."""
        call = job_log_call(job_id)
        response = await self._send(call.method, **call.kwargs)
        raise_for_problem(response)
        return response.text

    async def job_plot(self, job_id: str, plot: Literal["confusion", "curves"]) -> bytes:
        """A succeeded job's confusion matrix or training curves as PNG bytes."""
        call = job_plot_call(job_id, plot)
        response = await self._send(call.method, **call.kwargs)
        raise_for_problem(response)
        return response.content

    async def job_events(self, job_id: str, after: int = 0) -> AsyncIterator[JobEventInfo]:
        """The job's events numbered above ``after`` as they happen, ending after its final
        state (see ``Client.job_events``). Leaving the loop early: wrap it in
        ``contextlib.aclosing`` to close the stream at once.

        Example::

            async for event in c.job_events(job.id):
                print(event.kind, event.data)
        """
        async for event in self._follow(Follow(job_id, after)):
            yield event

    async def wait_for_job(self, job_id: str, timeout: float | None = None) -> JobInfo:  # noqa: ASYNC109 (Client's twin)
        """Follow the job until it is over and return it; ``TimeoutError`` after ``timeout``
        seconds if it is still going.

        Example::

            job = await c.wait_for_job(job.id, timeout=3600)
        """
        try:
            async with asyncio.timeout(timeout):
                follow = Follow(job_id)
                for _ in range(MAX_RECONNECTS + 2):
                    job = await self.get_job(job_id)
                    if job.state in FINAL_STATES:
                        return job
                    async for _event in self._follow(follow):
                        pass
        except TimeoutError:
            raise TimeoutError(f"job {job_id} is not over after the timeout") from None
        raise TransportError(f"the event stream of job {job_id} kept ending before the job did")

    async def _follow(self, follow: Follow) -> AsyncIterator[JobEventInfo]:
        while True:
            error: TransportError | None = None
            try:
                async for event in self._stream(follow):
                    yield event
            except TransportError as exc:
                error = exc
            if not follow.again(error):
                return

    async def _stream(self, follow: Follow) -> AsyncIterator[JobEventInfo]:
        call = follow.call(self._http.timeout)
        with transport_errors(self._http):
            async with self._http.stream(call.method, **call.kwargs) as response:
                if not response.is_success:
                    await response.aread()
                    raise_for_problem(response)
                follow.connected()
                parser = SseParser()
                async for line in response.aiter_lines():
                    sse = parser.feed(line)
                    if sse is not None:
                        event = job_event(sse)
                        follow.seen(event)
                        yield event

    # -- vector collections ------------------------------------------------------------------------
    async def create_collection(self, name: str, model: str, description: str = "") -> CollectionInfo:
        """A new collection over the embedding model ``model`` (needs ``collections:write``).

        Example::

            c.create_collection("photos", "mobilenet-v2-embed").dimension  # 1280
        """
        return await self._run(create_collection_call(name, model, description))  # type: ignore[no-any-return]

    async def list_collections(self) -> list[CollectionInfo]:
        """Every collection the key sees, with its size and index."""
        return (await self._run(list_collections_call())).collections  # type: ignore[no-any-return]

    async def get_collection(self, name: str) -> CollectionInfo:
        """A collection's model, dimension, size and index."""
        return await self._run(get_collection_call(name))  # type: ignore[no-any-return]

    async def drop_collection(self, name: str) -> None:
        """Remove a collection and every item in it."""
        await self._run(drop_collection_call(name))

    async def build_index(self, name: str) -> CollectionInfo:
        """Build the collection's approximate nearest-neighbour index (1,000 items or more)."""
        return await self._run(build_index_call(name))  # type: ignore[no-any-return]

    async def add_items(self, name: str, items: Sequence[Item]) -> AddResult:
        """Add (or replace, by id) items: images are embedded by the collection's model.

        Example::

            c.add_items("photos", [Item("cat", image="cat.jpg", metadata={"tag": "pet"})])
        """
        return await self._run(add_call(name, items))  # type: ignore[no-any-return]

    async def search(
        self,
        name: str,
        *,
        image: ImageSource | None = None,
        item_id: str | None = None,
        vector: Sequence[float] | None = None,
        k: int = 10,
    ) -> SearchResult:
        """The ``k`` items most similar to an image, a stored item or a vector, best first.

        Example::

            [n.id for n in c.search("photos", image="kitten.jpg", k=3).neighbours]  # ['cat', ...]
        """
        call = search_call(name, image=image, item_id=item_id, vector=vector, k=k)
        return await self._run(call)  # type: ignore[no-any-return]

    async def get_item(self, name: str, item_id: str, vector: bool = False) -> ItemOut:
        """A stored item's metadata (and its unit vector when ``vector``)."""
        return await self._run(get_item_call(name, item_id, vector))  # type: ignore[no-any-return]

    async def delete_items(self, name: str, ids: Sequence[str]) -> DeleteResult:
        """Remove items by id (ids not there are ignored)."""
        return await self._run(delete_items_call(name, ids))  # type: ignore[no-any-return]

    async def predict(
        self,
        model: str,
        images: ImageSource | list[ImageSource],
        *,
        top_k: int | None = None,
        version: int | None = None,
        alias: str | None = None,
        routing_key: str | None = None,
        options: Mapping[str, Option] | None = None,
    ) -> PredictResponse:
        """Run ``model`` on one image (path or bytes) or a list of them.

        Each of ``results`` has the form of the model's task: ``ClassificationResult``
        (``predictions``), ``DetectionResult`` (``detections`` with boxes in the image's
        pixels) or ``EmbeddingResult`` (``embedding``). ``options`` are the task's options,
        e.g. ``{"score": 0.5, "iou": 0.4}`` for a detector.

        Example::

            faces = c.predict("faces", "astronaut.jpg").results[0].detections
        """
        items = images if isinstance(images, list) else [images]
        encoded = [load_image(i) for i in items]
        call = predict_request(model, encoded, top_k, version, alias, routing_key, options)
        body = await self._call("POST", **call)
        return PredictResponse.model_validate(body)

    async def predict_image(
        self,
        model: str,
        image: ImageSource,
        *,
        options: Mapping[str, Option] | None = None,
        fmt: str = "jpeg",
        version: int | None = None,
        alias: str | None = None,
    ) -> bytes:
        """The image answer of ``model`` for one image, as ``fmt`` (``jpeg`` or ``png``): a
        detector's boxes drawn with ``options={"draw": True}``.

        Example::

            Path("drawn.jpg").write_bytes(c.predict_image("detector", "street.jpg", options={"draw": True}))
        """
        call = predict_request(model, [load_image(image)], None, version, alias, None, options, image_accept(fmt))
        response = await self._send("POST", **call)
        raise_for_problem(response)
        return response.content

    async def ready(self) -> bool:
        """Whether ``/readyz`` answers 200; ``False`` too while nothing answers at the URL.

        So a loop can wait for a server that is still starting. A server that accepts but
        does not answer still raises ``ServerTimeout``.
        """
        try:
            return (await self._send("GET", url="/readyz")).status_code == 200
        except ServerUnreachable:
            return False
