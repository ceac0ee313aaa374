"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
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

    # -- datasets ----------------------------------------------------------------------------------
    def push_dataset(
        self,
        name: str,
        archive: ArchiveSource,
        *,
        split: Split = (0.8, 0.1, 0.1),
        seed: int = 0,
        description: str = "",
    ) -> DatasetPushResult:
        """Upload a zip or tar of labelled images (a path, bytes or a binary file, streamed in
        chunks) as a version of dataset ``name``; needs ``datasets:write``.

        The server cleans it (the answer's ``report`` says what it dropped and why), splits
        it by class into train, validation and test with ``seed``, and stores it; the same
        images, labels and split again answer the existing version with ``created`` false.
        The read timeout is at least 10 minutes: large archives take a while to clean.

        Example::

            pushed = c.push_dataset("digits", "digits.zip", split=(0.8, 0.1, 0.1))
            pushed.ref, pushed.created, pushed.report["dropped"]["by_reason"]  # 'digits@1', True, {...}
        """
        upload = open_upload(archive)
        try:
            call = push_dataset_call(name, upload, split, seed, description, self._http.timeout)
            content = upload.head if upload.rest is None else upload.chunks()
            response = self._send(call.method, content=content, **call.kwargs)
        finally:
            upload.close()
        raise_for_problem(response)
        return DatasetPushResult.model_validate(response.json())

    def list_datasets(self) -> list[DatasetSummary]:
        """Every dataset the key sees, by name, with its newest version (needs ``datasets:read``)."""
        return (self._run(list_datasets_call())).datasets  # type: ignore[no-any-return]

    def get_dataset(self, name: str) -> DatasetDetail:
        """A dataset and its versions, newest first, each with its summary and cleaning report."""
        return self._run(get_dataset_call(name))  # type: ignore[no-any-return]

    def get_dataset_version(self, name: str, version: int) -> DatasetVersionInfo:
        """One dataset version: classes, counts per split, input size, statistics, report.

        Example::

            v = c.get_dataset_version("digits", 1)
            v.summary["counts"]["test"]  # {'0': 50, '1': 50, ...}
        """
        return self._run(get_dataset_version_call(name, version))  # type: ignore[no-any-return]

    # -- training jobs -----------------------------------------------------------------------------
    def train(
        self,
        dataset: str,
        model: str,
        config: TrainConfig | dict[str, Any] | None = None,
        description: str = "",
    ) -> JobInfo:
        """Queue a job training ``model`` on ``dataset`` (``name`` or ``name@version``); needs ``jobs``.

        Only the configuration fields given are sent (the server's defaults apply to the
        rest); a bad one is refused by the server with an error naming the field. A worker
        runs the job; the trained version is pushed to ``model`` with the ``staging`` alias.

        Example::

            job = c.train("digits", "digits-cnn", {"epochs": 20, "early_stopping": {"patience": 4}})
            c.wait_for_job(job.id).result["version"]  # 1
        """
        return self._run(train_call(dataset, model, config, description))  # type: ignore[no-any-return]

    def list_jobs(self, state: list[str] | None = None, limit: int = 100) -> list[JobInfo]:
        """Jobs newest first, only those in ``state`` (e.g. ``["queued", "running"]``) when given."""
        return (self._run(list_jobs_call(state, limit))).jobs  # type: ignore[no-any-return]

    def get_job(self, job_id: str) -> JobInfo:
        """A job's state, latest progress and, once over, its result or error."""
        return self._run(get_job_call(job_id))  # type: ignore[no-any-return]

    def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        return self._run(cancel_job_call(job_id))  # type: ignore[no-any-return]

    def job_log(self, job_id: str) -> str:
        """The job's log as text: state changes, epochs and log lines, oldest first."""
        call = job_log_call(job_id)
        response = self._send(call.method, **call.kwargs)
        raise_for_problem(response)
        return response.text

    def job_plot(self, job_id: str, plot: Literal["confusion", "curves"]) -> bytes:
        """A succeeded job's confusion matrix of the test split, or its loss and accuracy
        curves, as PNG bytes.

        Example::

            Path("confusion.png").write_bytes(c.job_plot(job.id, "confusion"))
        """
        call = job_plot_call(job_id, plot)
        response = self._send(call.method, **call.kwargs)
        raise_for_problem(response)
        return response.content

    def job_events(self, job_id: str, after: int = 0) -> Iterator[JobEventInfo]:
        """The job's events (``state``, ``progress``, ``epoch``, ``log``) numbered above
        ``after``, as they happen; the iteration ends after the job's final state.

        A finished job replays its whole history and ends. Read as Server-Sent Events; a
        connection that drops before the end is resumed from the last event seen (twice
        in a row at most), so no event is missed or repeated.

        Example::

            for event in c.job_events(job.id):
                if event.kind == "epoch":
                    print(event.data["epoch"], event.data["val_accuracy"])
        """
        yield from self._follow(Follow(job_id, after), None)

    def wait_for_job(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """Follow the job until it is over and return it; ``TimeoutError`` after ``timeout``
        seconds (checked at least every 15 s, as the server pings) if it is still going.

        Example::

            job = c.wait_for_job(c.train("digits", "digits-cnn").id, timeout=3600)
            job.state, job.result.get("accuracy")  # ('succeeded', 0.978)
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        follow = Follow(job_id)
        for _ in range(MAX_RECONNECTS + 2):
            job = self.get_job(job_id)
            if job.state in FINAL_STATES:
                return job
            for _event in self._follow(follow, deadline):
                pass
        raise TransportError(f"the event stream of job {job_id} kept ending before the job did")

    def _follow(self, follow: Follow, deadline: float | None) -> Iterator[JobEventInfo]:
        while True:
            error: TransportError | None = None
            try:
                yield from self._stream(follow, deadline)
            except TransportError as exc:
                error = exc
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {follow.job_id} is not over after the timeout")
            if not follow.again(error):
                return

    def _stream(self, follow: Follow, deadline: float | None) -> Iterator[JobEventInfo]:
        call = follow.call(self._http.timeout)
        with transport_errors(self._http), self._http.stream(call.method, **call.kwargs) as response:
            if not response.is_success:
                response.read()
                raise_for_problem(response)
            follow.connected()
            parser = SseParser()
            for line in response.iter_lines():
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {follow.job_id} is not over after the timeout")
                sse = parser.feed(line)
                if sse is not None:
                    event = job_event(sse)
                    follow.seen(event)
                    yield event

    # -- vector collections ------------------------------------------------------------------------
    def create_collection(self, name: str, model: str, description: str = "") -> CollectionInfo:
        """A new collection over the embedding model ``model`` (needs ``collections:write``).

        Example::

            c.create_collection("photos", "mobilenet-v2-embed").dimension  # 1280
        """
        return self._run(create_collection_call(name, model, description))  # type: ignore[no-any-return]

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection the key sees, with its size and index."""
        return (self._run(list_collections_call())).collections  # type: ignore[no-any-return]

    def get_collection(self, name: str) -> CollectionInfo:
        """A collection's model, dimension, size and index."""
        return self._run(get_collection_call(name))  # type: ignore[no-any-return]

    def drop_collection(self, name: str) -> None:
        """Remove a collection and every item in it."""
        self._run(drop_collection_call(name))

    def build_index(self, name: str) -> CollectionInfo:
        """Build the collection's approximate nearest-neighbour index (1,000 items or more)."""
        return self._run(build_index_call(name))  # type: ignore[no-any-return]

    def add_items(self, name: str, items: Sequence[Item]) -> AddResult:
        """Add (or replace, by id) items: images are embedded by the collection's model.

        Example::

            c.add_items("photos", [Item("cat", image="cat.jpg", metadata={"tag": "pet"})])
        """
        return self._run(add_call(name, items))  # type: ignore[no-any-return]

    def search(
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
        return self._run(call)  # type: ignore[no-any-return]

    def get_item(self, name: str, item_id: str, vector: bool = False) -> ItemOut:
        """A stored item's metadata (and its unit vector when ``vector``)."""
        return self._run(get_item_call(name, item_id, vector))  # type: ignore[no-any-return]

    def delete_items(self, name: str, ids: Sequence[str]) -> DeleteResult:
        """Remove items by id (ids not there are ignored)."""
        return self._run(delete_items_call(name, ids))  # type: ignore[no-any-return]

    def predict(
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
        body = self._call("POST", **call)
        return PredictResponse.model_validate(body)

    def predict_image(
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
        response = self._send("POST", **call)
        raise_for_problem(response)
        return response.content

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200; ``False`` too while nothing answers at the URL.

        So a loop can wait for a server that is still starting. A server that accepts but
        does not answer still raises ``ServerTimeout``.
        """
        try:
            return self._send("GET", url="/readyz").status_code == 200
        except ServerUnreachable:
            return False
