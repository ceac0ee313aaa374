"""Who may call what: one table for every REST route, every OIP REST route and every gRPC RPC.

Each row names a surface, an operation, the scopes that allow it (any one of them; ``PUBLIC``
needs no key, ``ANY_KEY`` any valid key) and how it touches a model (``MODEL``: a key limited
to other models gets the 404 of an absent model, ``PUSH``: 403 ``model_forbidden``, and no
trace of the refused push is left; ``DATASET`` and ``JOB``: like ``MODEL`` for a dataset, whose
name is what a key's model patterns match, and a job, seen through the model it trains). Every row
is called with no key, a malformed key, a well-formed unknown key, a real id with a wrong
secret, a revoked key, an expired key, a key with every scope but the required ones, a key
with only one required scope, and (model rows) a key limited to another model and a key
limited to this one. The table is checked against the app's routes and the servicer's RPCs
at runtime, so a new route without a row fails here.

One server per module, two tiny models (``alpha`` to call, ``beta`` for the limited keys),
each with two versions, a dataset of the same name as each and, per model, a queued job and a
cancelled one training it from that dataset, so every request is valid and an allowed call
gets its real answer.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from imaas.api.grpc_server import OipServicer
from imaas.settings import AuthSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier

ALL = frozenset(
    {
        "infer",
        "models:read",
        "models:write",
        "keys:admin",
        "usage:read",
        "jobs",
        "datasets:read",
        "datasets:write",
        "collections:read",
        "collections:write",
    }
)
PUBLIC: frozenset[str] | None = None
ANY_KEY: frozenset[str] = frozenset()
INFER = frozenset({"infer"})
READ = frozenset({"models:read"})
WRITE = frozenset({"models:write"})
DESCRIBE = frozenset({"infer", "models:read"})
ADMIN = frozenset({"keys:admin"})
JOBS = frozenset({"jobs"})
DS_READ = frozenset({"datasets:read"})
DS_WRITE = frozenset({"datasets:write"})
COL_READ = frozenset({"collections:read"})
COL_WRITE = frozenset({"collections:write"})

NONE, MODEL, PUSH, DATASET, JOB, COLLECTION = "", "model", "push", "dataset", "job", "collection"
HIDDEN = {
    MODEL: "model_not_found",
    DATASET: "dataset_not_found",
    JOB: "job_not_found",
    COLLECTION: "collection_not_found",
}  # hidden = absent
EMBEDDER = "emb"  # the embedding model every collection of the table is made over (only the admin sees it)
TARGET, OTHER, ABSENT = "alpha", "beta", "ghost"
ABSENT_JOB = "job_000000000000"
LABELS = "labels: [red, blue, green, grey]\n"


@dataclass(frozen=True)
class Req:
    """One HTTP request, without its credentials."""

    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ctx:
    """What the request builders need: the server, an image and a key factory."""

    server: RunningServer
    http: httpx.Client
    png: bytes
    model_file: bytes
    image_input: str
    dataset_zip: bytes = b""
    queued: dict[str, str] = field(default_factory=dict)  # model -> a queued job training it
    cancelled: dict[str, str] = field(default_factory=dict)  # model -> a cancelled (final) job

    def collection(self, name: str) -> str:
        """``name``, once a collection of that name holds the items ``x`` and ``y`` (made by the
        admin over ``EMBEDDER`` when a row dropped it or deleted them; nothing for ``ABSENT``)."""
        if name == ABSENT:
            return name
        admin = self.server.headers
        if self.http.get(f"/v1/collections/{name}", headers=admin).status_code == 404:
            r = self.http.post("/v1/collections", json={"name": name, "model": EMBEDDER}, headers=admin)
            assert r.status_code == 201, r.text
        items = [{"id": i, "vector": [1.0, float(n), 0.0, 0.0]} for n, i in enumerate("xy")]
        r = self.http.post(f"/v1/collections/{name}/items", json={"items": items}, headers=admin)
        assert r.status_code == 200, r.text
        return name

    def victim(self) -> str:
        """The id of a fresh key (revoked or rotated by the row that asked for it)."""
        r = self.http.post("/v1/keys", json={"name": "victim", "scopes": ["keys:admin"]}, headers=self.server.headers)
        assert r.status_code == 201, r.text
        key_id: str = r.json()["key"]["id"]
        return key_id


RestCall = Callable[[Ctx, str], Req]
GrpcCall = Callable[[Ctx, pb_grpc.GRPCInferenceServiceStub, str, tuple[tuple[str, str], ...]], Any]


@dataclass(frozen=True)
class Row:
    """One operation of the table (see the module docstring)."""

    surface: str  # "rest" (/v1 and the documentation), "oip" (/v2 REST), "grpc"
    operation: str  # "METHOD /route/path" as the app spells it, or the RPC's name
    scopes: frozenset[str] | None
    touches: str  # NONE, MODEL, PUSH, DATASET or JOB
    ok: frozenset[int]  # statuses of an allowed call (gRPC: OK only)
    rest: RestCall | None = None
    rpc: GrpcCall | None = None
    ok_code: str | None = None  # the problem code of an allowed call that answers one (a 404 of its own)
    gone: str = "/v1/models/{m}"  # PUSH: what a refused push must not have created (404 for an admin)
    subject: Callable[[Ctx, str], str] | None = None  # how answers name what ``m`` stands for; None: m


def _same(ctx: Ctx, m: str) -> str:
    return m


def _get(path: str) -> RestCall:
    return lambda ctx, m: Req("GET", path.format(m=m))


def _oip_binary(ctx: Ctx, images: list[bytes]) -> dict[str, Any]:
    raw = b"".join(struct.pack("<I", len(b)) + b for b in images)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": ctx.image_input,
                    "datatype": "BYTES",
                    "shape": [len(images)],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return {
        "content": head + raw,
        "headers": {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))},
    }


def _push(ctx: Ctx, m: str) -> Req:
    return Req(
        "POST",
        f"/v1/models/{m}/versions",
        {"files": {"model": ("m.onnx", ctx.model_file)}, "data": {"manifest": LABELS}},
    )


def _predict_raw(ctx: Ctx, m: str) -> Req:
    return Req("POST", f"/v1/models/{m}:predict", {"content": ctx.png, "headers": {"content-type": "image/png"}})


def _predict_multipart(ctx: Ctx, m: str) -> Req:
    files = [("file", ("a.png", ctx.png, "image/png")), ("file", ("b.png", ctx.png, "image/png"))]
    return Req("POST", f"/v1/models/{m}:predict", {"files": files})


def _predict_json(ctx: Ctx, m: str) -> Req:
    body = {"images": [{"data": base64.b64encode(ctx.png).decode()}]}
    return Req("POST", f"/v1/models/{m}:predict", {"json": body})


def _noise_png(seed: int, size: int = 20) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _dataset_zip() -> bytes:
    """Two classes of three noise images each (the fewest the default 80/10/10 split takes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c, label in enumerate(("red", "blue")):
            for i in range(3):
                zf.writestr(f"{label}/{i}.png", _noise_png(10 * c + i))
    return buf.getvalue()


def _push_dataset(ctx: Ctx, m: str) -> Req:
    return Req(
        "POST", f"/v1/datasets/{m}", {"content": ctx.dataset_zip, "headers": {"content-type": "application/zip"}}
    )


def _submit(ctx: Ctx, m: str) -> Req:
    return Req("POST", "/v1/jobs", {"json": {"dataset": m, "model": m, "config": {"epochs": 1}}})


OK_200 = frozenset({200})


def _job_row(
    operation: str, suffix: str, final: bool = False, ok: frozenset[int] = frozenset({200}), ok_code: str | None = None
) -> Row:
    """A row on the job that trains ``m`` (a cancelled one when ``final``: its event stream ends)."""

    def job_id(ctx: Ctx, m: str) -> str:
        return {**(ctx.cancelled if final else ctx.queued), ABSENT: ABSENT_JOB}[m]

    def build(ctx: Ctx, m: str) -> Req:
        return Req(operation.split(" ", 1)[0], f"/v1/jobs/{job_id(ctx, m)}{suffix}")

    return Row("rest", operation, JOBS, JOB, ok, build, ok_code=ok_code, subject=job_id)


def _collection_row(
    operation: str, suffix: str, scopes: frozenset[str], ok: frozenset[int] = OK_200, **kwargs: Any
) -> Row:
    """A row on the collection named ``m`` (the admin makes it, with items, before each call)."""
    method = operation.split(" ", 1)[0]

    def build(ctx: Ctx, m: str) -> Req:
        return Req(method, f"/v1/collections/{ctx.collection(m)}{suffix}", kwargs)

    return Row("rest", operation, scopes, COLLECTION, ok, build)


def _infer(version: str) -> RestCall:
    return lambda ctx, m: Req("POST", f"/v2/models/{m}{version}/infer", _oip_binary(ctx, [ctx.png]))


def _grpc_infer(ctx: Ctx, stub: pb_grpc.GRPCInferenceServiceStub, m: str, md: tuple[tuple[str, str], ...]) -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(name=ctx.image_input, datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(ctx.png)
    return stub.ModelInfer(pb.ModelInferRequest(model_name=m, inputs=[tensor]), metadata=md, timeout=30)


OK = frozenset({200})
READY = frozenset({200, 400})  # OIP readiness answers 400 {"ready": false} for an unloaded model

TABLE: list[Row] = [
    # -- public: probes and documentation --------------------------------------------------
    Row("rest", "GET /healthz", PUBLIC, NONE, OK, _get("/healthz")),
    Row("rest", "GET /readyz", PUBLIC, NONE, OK, _get("/readyz")),
    Row("rest", "GET /openapi.json", PUBLIC, NONE, OK, _get("/openapi.json")),
    Row("rest", "GET /docs", PUBLIC, NONE, OK, _get("/docs")),
    Row("rest", "GET /docs/oauth2-redirect", PUBLIC, NONE, OK, _get("/docs/oauth2-redirect")),
    Row("rest", "GET /redoc", PUBLIC, NONE, OK, _get("/redoc")),
    Row("rest", "GET /static-offline-docs/{path}", PUBLIC, NONE, OK, _get("/static-offline-docs/swagger-ui.css")),
    # -- catalog -----------------------------------------------------------------------------
    Row("rest", "GET /v1/models", READ, NONE, OK, _get("/v1/models")),
    Row("rest", "GET /v1/models/{name:imaas_model}", READ, MODEL, OK, _get("/v1/models/{m}")),
    # the same bytes again: 200 with the existing version (nothing changes)
    Row("rest", "POST /v1/models/{name}/versions", WRITE, PUSH, frozenset({200}), _push),
    Row(
        "rest",
        "PUT /v1/models/{name}/aliases/{alias}",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req("PUT", f"/v1/models/{m}/aliases/staging", {"json": {"version": 1}}),
    ),
    # -- lifecycle ---------------------------------------------------------------------------
    Row(
        "rest",
        "POST /v1/models/{name}/promote",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req("POST", f"/v1/models/{m}/promote", {"json": {"version": 2, "alias": "staging"}}),
    ),
    Row(
        "rest",
        "POST /v1/models/{name}/rollback",
        WRITE,
        MODEL,
        frozenset({200, 409}),  # 409 nothing_to_roll_back once the history is walked back
        lambda ctx, m: Req("POST", f"/v1/models/{m}/rollback", {"json": {"alias": "staging"}}),
    ),
    Row(
        "rest",
        "PUT /v1/models/{name}/aliases/{alias}/canary",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req(
            "PUT", f"/v1/models/{m}/aliases/production/canary", {"json": {"version": 2, "weight": 10.0}}
        ),
    ),
    Row(
        "rest",
        "DELETE /v1/models/{name}/aliases/{alias}/canary",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req("DELETE", f"/v1/models/{m}/aliases/production/canary"),
    ),
    Row(
        "rest",
        "PUT /v1/models/{name}/aliases/{alias}/shadow",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req(
            "PUT", f"/v1/models/{m}/aliases/production/shadow", {"json": {"version": 2, "weight": 10.0}}
        ),
    ),
    Row(
        "rest",
        "DELETE /v1/models/{name}/aliases/{alias}/shadow",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req("DELETE", f"/v1/models/{m}/aliases/production/shadow"),
    ),
    Row("rest", "GET /v1/models/{name}/status", READ, MODEL, OK, _get("/v1/models/{m}/status")),
    Row("rest", "GET /v1/models/{name}/comparison", READ, MODEL, OK, _get("/v1/models/{m}/comparison")),
    Row("rest", "GET /v1/models/{name}/history", READ, MODEL, OK, _get("/v1/models/{m}/history")),
    Row(
        "rest",
        "PATCH /v1/models/{name:imaas_model}",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req("PATCH", f"/v1/models/{m}", {"json": {"description": "a tiny classifier"}}),
    ),
    Row(
        "rest",
        "PATCH /v1/models/{name}/versions/{version}",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req("PATCH", f"/v1/models/{m}/versions/2", {"json": {"description": "the second"}}),
    ),
    # version 1 is production's: 409 version_in_use (an allowed call that changes nothing)
    Row(
        "rest",
        "DELETE /v1/models/{name}/versions/{version}",
        WRITE,
        MODEL,
        frozenset({409}),
        lambda ctx, m: Req("DELETE", f"/v1/models/{m}/versions/1"),
    ),
    # -- inference: the raw fast path and the FastAPI route (multipart, JSON) ----------------
    Row("rest", "POST /v1/models/{name}:predict", INFER, MODEL, OK, _predict_raw),
    Row("rest", "POST /v1/models/{name}:predict", INFER, MODEL, OK, _predict_multipart),
    Row("rest", "POST /v1/models/{name}:predict", INFER, MODEL, OK, _predict_json),
    # -- keys, usage, audit --------------------------------------------------------------------
    Row(
        "rest",
        "POST /v1/keys",
        ADMIN,
        NONE,
        frozenset({201}),
        lambda ctx, m: Req("POST", "/v1/keys", {"json": {"name": "made", "scopes": ["keys:admin"]}}),
    ),
    Row("rest", "GET /v1/keys", ADMIN, NONE, OK, _get("/v1/keys")),
    Row("rest", "GET /v1/keys/{key_id}", ADMIN, NONE, OK, lambda ctx, m: Req("GET", f"/v1/keys/{ctx.victim()}")),
    Row("rest", "DELETE /v1/keys/{key_id}", ADMIN, NONE, OK, lambda ctx, m: Req("DELETE", f"/v1/keys/{ctx.victim()}")),
    Row(
        "rest",
        "POST /v1/keys/{key_id}/rotate",
        ADMIN,
        NONE,
        frozenset({201}),
        lambda ctx, m: Req("POST", f"/v1/keys/{ctx.victim()}/rotate", {"json": {"grace_s": 0}}),
    ),
    Row("rest", "GET /v1/usage", ANY_KEY, NONE, OK, _get("/v1/usage")),
    Row("rest", "GET /v1/audit", ADMIN, NONE, OK, _get("/v1/audit")),
    # -- datasets: a key's model patterns match dataset names ----------------------------------
    Row("rest", "GET /v1/datasets", DS_READ, NONE, OK, _get("/v1/datasets")),
    Row("rest", "GET /v1/datasets/{dataset}", DS_READ, DATASET, OK, _get("/v1/datasets/{m}")),
    Row(
        "rest",
        "GET /v1/datasets/{dataset}/versions/{version}",
        DS_READ,
        DATASET,
        OK,
        _get("/v1/datasets/{m}/versions/1"),
    ),
    # the same archive again: 200 with the existing version (nothing changes)
    Row("rest", "POST /v1/datasets/{dataset}", DS_WRITE, PUSH, OK, _push_dataset, gone="/v1/datasets/{m}"),
    # -- training jobs: seen through the model they train --------------------------------------
    Row("rest", "POST /v1/jobs", JOBS, PUSH, frozenset({202}), _submit),
    Row("rest", "GET /v1/jobs", JOBS, NONE, OK, _get("/v1/jobs")),
    _job_row("GET /v1/jobs/{job_id}", ""),
    _job_row("GET /v1/jobs/{job_id}/log", "/log"),
    _job_row("GET /v1/jobs/{job_id}/events", "/events", final=True),  # the whole history, then the end
    _job_row("POST /v1/jobs/{job_id}/cancel", "/cancel"),
    # a job that never ran has no plots: an allowed caller learns that (404 not_found), a
    # hidden one only that there is no such job (404 job_not_found)
    _job_row(
        "GET /v1/jobs/{job_id}/plots/{plot}.png", "/plots/confusion.png", ok=frozenset({404}), ok_code="not_found"
    ),
    # -- vector collections: a key's model patterns match collection names ----------------------
    # a classification model cannot back a collection: 422 (an allowed call that creates nothing)
    Row(
        "rest",
        "POST /v1/collections",
        COL_WRITE,
        PUSH,
        frozenset({422}),
        lambda ctx, m: Req("POST", "/v1/collections", {"json": {"name": m, "model": m}}),
        ok_code="invalid_field",
        gone="/v1/collections/{m}",
    ),
    Row("rest", "GET /v1/collections", COL_READ, NONE, OK, _get("/v1/collections")),
    _collection_row("GET /v1/collections/{collection:imaas_model}", "", COL_READ),
    _collection_row("DELETE /v1/collections/{collection:imaas_model}", "", COL_WRITE, frozenset({204})),
    _collection_row(
        "POST /v1/collections/{collection}/items",
        "/items",
        COL_WRITE,
        json={"items": [{"id": "z", "vector": [0.0, 0.0, 1.0, 0.0]}]},
    ),
    _collection_row("POST /v1/collections/{collection}:search", ":search", COL_READ, json={"id": "x", "k": 2}),
    _collection_row("GET /v1/collections/{collection}/items/{item_id}", "/items/x", COL_READ),
    _collection_row("DELETE /v1/collections/{collection}/items/{item_id}", "/items/y", COL_WRITE, frozenset({204})),
    _collection_row(
        "POST /v1/collections/{collection}/items:delete", "/items:delete", COL_WRITE, json={"ids": ["none"]}
    ),
    # too few items for an index: 400 (an allowed call that changes nothing)
    _collection_row("POST /v1/collections/{collection}:index", ":index", COL_WRITE, frozenset({400})),
    # -- Open Inference Protocol over REST ---------------------------------------------------
    Row("oip", "GET /v2", PUBLIC, NONE, OK, _get("/v2")),
    Row("oip", "GET /v2/health/live", PUBLIC, NONE, OK, _get("/v2/health/live")),
    Row("oip", "GET /v2/health/ready", PUBLIC, NONE, OK, _get("/v2/health/ready")),
    Row("oip", "GET /v2/models/{model}", DESCRIBE, MODEL, OK, _get("/v2/models/{m}")),
    Row("oip", "GET /v2/models/{model}/versions/{version}", DESCRIBE, MODEL, OK, _get("/v2/models/{m}/versions/1")),
    Row("oip", "GET /v2/models/{model}/ready", DESCRIBE, MODEL, READY, _get("/v2/models/{m}/ready")),
    Row(
        "oip",
        "GET /v2/models/{model}/versions/{version}/ready",
        DESCRIBE,
        MODEL,
        READY,
        _get("/v2/models/{m}/versions/1/ready"),
    ),
    Row("oip", "POST /v2/models/{model}/infer", INFER, MODEL, OK, _infer("")),
    Row("oip", "POST /v2/models/{model}/versions/{version}/infer", INFER, MODEL, OK, _infer("/versions/1")),
    Row(
        "oip",
        "POST /v2/repository/index",
        READ,
        NONE,
        OK,
        lambda ctx, m: Req("POST", "/v2/repository/index", {"json": {}}),
    ),
    Row(
        "oip",
        "POST /v2/repository/models/{model}/unload",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req("POST", f"/v2/repository/models/{m}/unload"),
    ),
    Row(
        "oip",
        "POST /v2/repository/models/{model}/load",
        WRITE,
        MODEL,
        OK,
        lambda ctx, m: Req("POST", f"/v2/repository/models/{m}/load"),
    ),
    # -- Open Inference Protocol over gRPC ---------------------------------------------------
    Row(
        "grpc",
        "ServerLive",
        PUBLIC,
        NONE,
        OK,
        rpc=lambda c, s, m, md: s.ServerLive(pb.ServerLiveRequest(), metadata=md),
    ),
    Row(
        "grpc",
        "ServerReady",
        PUBLIC,
        NONE,
        OK,
        rpc=lambda c, s, m, md: s.ServerReady(pb.ServerReadyRequest(), metadata=md),
    ),
    Row(
        "grpc",
        "ServerMetadata",
        PUBLIC,
        NONE,
        OK,
        rpc=lambda c, s, m, md: s.ServerMetadata(pb.ServerMetadataRequest(), metadata=md),
    ),
    Row(
        "grpc",
        "ModelReady",
        DESCRIBE,
        MODEL,
        OK,
        rpc=lambda c, s, m, md: s.ModelReady(pb.ModelReadyRequest(name=m), metadata=md),
    ),
    Row(
        "grpc",
        "ModelMetadata",
        DESCRIBE,
        MODEL,
        OK,
        rpc=lambda c, s, m, md: s.ModelMetadata(pb.ModelMetadataRequest(name=m), metadata=md),
    ),
    Row("grpc", "ModelInfer", INFER, MODEL, OK, rpc=_grpc_infer),
    Row(
        "grpc",
        "RepositoryIndex",
        READ,
        NONE,
        OK,
        rpc=lambda c, s, m, md: s.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=md),
    ),
    Row(
        "grpc",
        "RepositoryModelUnload",
        WRITE,
        MODEL,
        OK,
        rpc=lambda c, s, m, md: s.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=m), metadata=md),
    ),
    Row(
        "grpc",
        "RepositoryModelLoad",
        WRITE,
        MODEL,
        OK,
        rpc=lambda c, s, m, md: s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=m), metadata=md),
    ),
]

# the 401 code of each bad credential (gRPC: UNAUTHENTICATED, with these words in its details)
BAD_CREDENTIALS = {
    "none": ("missing_credentials", "Authorization: Bearer"),
    "malformed": ("malformed_credentials", "Bearer"),
    "unknown": ("invalid_credentials", "not valid"),
    "wrong_secret": ("invalid_credentials", "not valid"),
    "revoked": ("key_revoked", "revoked"),
    "expired": ("key_expired", "expired"),
}


@dataclass
class Keys:
    """The credentials each row is called with (the whole ``Authorization`` value, or None)."""

    bad: dict[str, str | None]
    only: dict[str, str]  # one scope -> a key with only it
    without: dict[frozenset[str], str]  # required scopes -> a key with every other scope
    limited: str  # every scope, only model OTHER
    limited_pattern: str  # infer + models:read, models "bet?" (a pattern)


@dataclass
class Matrix:
    ctx: Ctx
    keys: Keys
    channel: grpc.Channel
    stub: pb_grpc.GRPCInferenceServiceStub


def _bearer(key: str) -> str:
    return f"Bearer {key}"


def _make_key(http: httpx.Client, admin: dict[str, str], scopes: list[str], **extra: Any) -> tuple[str, str]:
    r = http.post("/v1/keys", json={"name": "matrix", "scopes": sorted(scopes), **extra}, headers=admin)
    assert r.status_code == 201, r.text
    body = r.json()
    return body["key"]["id"], body["secret"]


def _push_model(http: httpx.Client, admin: dict[str, str], name: str, model: bytes) -> None:
    r = http.post(
        f"/v1/models/{name}/versions", files={"model": ("m.onnx", model)}, data={"manifest": LABELS}, headers=admin
    )
    assert r.status_code == 201, r.text


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    root = tmp_path_factory.mktemp("authz")
    server = RunningServer(Settings(home=root / "home", auth=AuthSettings(refresh_s=0.2))).start()
    http = httpx.Client(base_url=server.url, timeout=30)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        admin = server.headers
        v1 = tiny_classifier(root / "v1.onnx", seed=1).read_bytes()
        v2 = tiny_classifier(root / "v2.onnx", seed=2).read_bytes()
        for name in (TARGET, OTHER):
            _push_model(http, admin, name, v1)
            _push_model(http, admin, name, v2)
        r = http.post(
            f"/v1/models/{EMBEDDER}/versions",
            files={"model": ("m.onnx", v1)},
            data={"manifest": "task: embedding\n"},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        md = http.get(f"/v2/models/{TARGET}", headers=admin).json()
        image_input = next(i["name"] for i in md["inputs"] if i["datatype"] == "BYTES")
        ctx = Ctx(server, http, solid((200, 30, 30)), v2, image_input, _dataset_zip())
        for name in (TARGET, OTHER):  # a dataset named like each model, and jobs training it
            r = http.post(f"/v1/datasets/{name}", content=ctx.dataset_zip, headers=admin)
            assert r.status_code == 201, r.text
            for jobs in (ctx.queued, ctx.cancelled):
                r = http.post("/v1/jobs", json={"dataset": name, "model": name, "config": {"epochs": 1}}, headers=admin)
                assert r.status_code == 202, r.text
                jobs[name] = r.json()["id"]
            assert http.post(f"/v1/jobs/{ctx.cancelled[name]}/cancel", headers=admin).json()["state"] == "cancelled"

        # an expiring key first: it must work before it expires, and stop at request time after
        expires = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        _, expiring = _make_key(http, admin, sorted(ALL), expires_at=expires)
        assert http.get("/v1/models", headers={"authorization": _bearer(expiring)}).status_code == 200
        revoked_id, revoked = _make_key(http, admin, sorted(ALL))
        assert http.get("/v1/models", headers={"authorization": _bearer(revoked)}).status_code == 200
        assert http.delete(f"/v1/keys/{revoked_id}", headers=admin).status_code == 200
        real_id = server.key.split("_", 2)[1]
        bad: dict[str, str | None] = {
            "none": None,
            "malformed": "Bearer not-an-imaas-key",
            "unknown": _bearer(f"imaas_{'a' * 12}_{'B' * 43}"),
            "wrong_secret": _bearer(f"imaas_{real_id}_{'C' * 43}"),
            "revoked": _bearer(revoked),
            "expired": _bearer(expiring),
        }
        only = {s: _bearer(_make_key(http, admin, [s])[1]) for s in sorted(ALL)}
        required = {row.scopes for row in TABLE if row.scopes}
        without = {s: _bearer(_make_key(http, admin, sorted(ALL - s))[1]) for s in required}
        # the limited key also sees the embedding model behind the collections (a collection is
        # visible to a key that sees its name and its model)
        limited = _bearer(_make_key(http, admin, sorted(ALL), models=[OTHER, EMBEDDER])[1])
        pattern = _bearer(_make_key(http, admin, ["infer", "models:read"], models=["bet?"])[1])
        _wait_for(
            "the expiring key to expire",
            lambda: http.get("/v1/models", headers={"authorization": _bearer(expiring)}).status_code == 401,
        )
        keys = Keys(bad, only, without, limited, pattern)
        yield Matrix(ctx, keys, channel, pb_grpc.GRPCInferenceServiceStub(channel))
    finally:
        channel.close()
        http.close()
        server.stop()


# -- the table covers the app --------------------------------------------------------------
def _routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every route of the app, with those of included routers (FastAPI keeps them inside their router)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def _app_operations(server: RunningServer) -> set[str]:
    from starlette.routing import Mount

    ops: set[str] = set()
    for route in _routes(server.app.router.routes):
        if isinstance(route, Mount):
            ops.add(f"GET {route.path}/{{path}}")
            continue
        for method in set(getattr(route, "methods", None) or ()) - {"HEAD"}:
            ops.add(f"{method} {route.path}")
    return ops


def test_table_covers_every_route_and_rpc(matrix: Matrix) -> None:
    http_rows = {r.operation for r in TABLE if r.surface in ("rest", "oip")}
    assert http_rows == _app_operations(matrix.ctx.server)
    for row in TABLE:
        if row.surface == "oip":
            assert row.operation.split(" ", 1)[1].startswith("/v2")
        elif row.surface == "rest":
            assert not row.operation.split(" ", 1)[1].startswith("/v2")
    implemented = {
        name for name, value in vars(OipServicer).items() if name[:1].isupper() and callable(value)
    }  # the RPCs imaas overrides (the base class answers UNIMPLEMENTED)
    assert implemented == {
        "ServerLive",
        "ServerReady",
        "ServerMetadata",
        "ModelReady",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
    assert {r.operation for r in TABLE if r.surface == "grpc"} == implemented


# -- each row, every caller -----------------------------------------------------------------
def _send(m: Matrix, row: Row, model: str, authorization: str | None) -> httpx.Response:
    assert row.rest is not None
    req = row.rest(m.ctx, model)
    kwargs = dict(req.kwargs)
    headers = dict(kwargs.pop("headers", {}))
    if authorization is not None:
        headers["authorization"] = authorization
    return m.ctx.http.request(req.method, req.path, headers=headers, **kwargs)


def _without_request_id(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k != "request_id"}
    return body


def _check_http(m: Matrix, row: Row) -> list[str]:
    """Every caller against the row; returns what differed from the table."""
    problems: list[str] = []
    oip = row.surface == "oip"

    def expect(label: str, r: httpx.Response, status: int | frozenset[int], code: str | None = None) -> None:
        statuses = frozenset({status}) if isinstance(status, int) else status
        if r.status_code not in statuses:
            problems.append(f"{label}: status {r.status_code} (wanted {sorted(statuses)}): {r.text[:300]}")
            return
        if code is None:
            return
        body = r.json()
        if oip:
            if set(body) != {"error"} or not isinstance(body["error"], str):
                problems.append(f"{label}: OIP error body {body!r} is not {{'error': str}}")
        elif body.get("code") != code:
            problems.append(f"{label}: code {body.get('code')!r} (wanted {code!r})")
        if status == 401 and not r.headers.get("www-authenticate", "").startswith("Bearer"):
            problems.append(f"{label}: 401 without WWW-Authenticate: Bearer")

    if row.scopes is None:  # public: answered with no key, and a bad key changes nothing
        for label in ("none", "malformed"):
            expect(label, _send(m, row, TARGET, m.keys.bad[label]), row.ok, row.ok_code)
        return problems
    for label, (code, _words) in BAD_CREDENTIALS.items():
        expect(label, _send(m, row, TARGET, m.keys.bad[label]), 401, code)
    if row.scopes:
        expect("without", _send(m, row, TARGET, m.keys.without[row.scopes]), 403, "insufficient_scope")
    for scope in sorted(row.scopes or ALL):  # ANY_KEY: a key with any one scope will do
        expect(f"only {scope}", _send(m, row, TARGET, m.keys.only[scope]), row.ok, row.ok_code)
    if row.touches in HIDDEN:
        code = HIDDEN[row.touches]
        subject = row.subject or _same
        hidden = _send(m, row, TARGET, m.keys.limited)
        absent = _send(m, row, ABSENT, m.ctx.server.headers["authorization"])
        expect(f"limited to another model ({row.touches} hidden)", hidden, 404, code)
        expect(f"admin naming an absent {row.touches}", absent, 404, code)
        if hidden.status_code == absent.status_code == 404:
            seen = json.loads(hidden.text.replace(repr(subject(m.ctx, TARGET)), repr(subject(m.ctx, ABSENT))))
            if _without_request_id(seen) != _without_request_id(absent.json()):
                problems.append(f"hidden {row.touches} answers {hidden.text!r}, an absent one {absent.text!r}")
        expect("limited to this model", _send(m, row, OTHER, m.keys.limited), row.ok, row.ok_code)
    elif row.touches == PUSH:
        hidden = _send(m, row, TARGET, m.keys.limited)
        new = _send(m, row, ABSENT, m.keys.limited)
        expect("push outside the key's models", hidden, 403, "model_forbidden")
        expect("push of a new model outside them", new, 403, "model_forbidden")
        if _without_request_id(hidden.json()) != _without_request_id(new.json()):
            problems.append(f"a push to an existing model answers {hidden.text!r}, to a new one {new.text!r}")
        expect("push within the key's models", _send(m, row, OTHER, m.keys.limited), row.ok, row.ok_code)
        gone = m.ctx.http.get(row.gone.format(m=ABSENT), headers=m.ctx.server.headers)
        if gone.status_code != 404:
            problems.append(f"a refused push created {row.gone.format(m=ABSENT)!r}: {gone.status_code}")
    return problems


def _call_grpc(m: Matrix, row: Row, model: str, authorization: str | None) -> tuple[grpc.StatusCode, str]:
    assert row.rpc is not None
    md = (("authorization", authorization),) if authorization is not None else ()
    try:
        row.rpc(m.ctx, m.stub, model, md)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _check_grpc(m: Matrix, row: Row) -> list[str]:
    problems: list[str] = []

    def expect(label: str, got: tuple[grpc.StatusCode, str], want: grpc.StatusCode, words: str = "") -> None:
        if got[0] != want or words not in got[1]:
            problems.append(f"{label}: {got[0].name} {got[1]!r} (wanted {want.name} with {words!r})")

    if row.scopes is None:
        for label in ("none", "malformed"):
            expect(label, _call_grpc(m, row, TARGET, m.keys.bad[label]), grpc.StatusCode.OK)
        return problems
    for label, (_code, words) in BAD_CREDENTIALS.items():
        expect(label, _call_grpc(m, row, TARGET, m.keys.bad[label]), grpc.StatusCode.UNAUTHENTICATED, words)
    if row.scopes:
        expect("without", _call_grpc(m, row, TARGET, m.keys.without[row.scopes]), grpc.StatusCode.PERMISSION_DENIED)
    for scope in sorted(row.scopes or ALL):
        expect(f"only {scope}", _call_grpc(m, row, TARGET, m.keys.only[scope]), grpc.StatusCode.OK)
    if row.touches == MODEL:
        hidden = _call_grpc(m, row, TARGET, m.keys.limited)
        absent = _call_grpc(m, row, ABSENT, m.ctx.server.headers["authorization"])
        expect("limited to another model", hidden, grpc.StatusCode.NOT_FOUND)
        expect("admin naming an absent model", absent, grpc.StatusCode.NOT_FOUND)
        if hidden[1].replace(repr(TARGET), repr(ABSENT)) != absent[1]:
            problems.append(f"hidden model: {hidden[1]!r}, absent model: {absent[1]!r}")
        expect("limited to this model", _call_grpc(m, row, OTHER, m.keys.limited), grpc.StatusCode.OK)
    return problems


def _row_id(row: Row) -> str:
    """The operation, and the request builder's name where one operation has several rows."""
    name = getattr(row.rest, "__name__", "<lambda>")
    several = sum(r.surface == row.surface and r.operation == row.operation for r in TABLE) > 1
    return f"{row.surface}:{row.operation}" + (f":{name.strip('_')}" if several and name != "<lambda>" else "")


@pytest.mark.parametrize("row", TABLE, ids=_row_id)
def test_row(matrix: Matrix, row: Row) -> None:
    problems = _check_grpc(matrix, row) if row.surface == "grpc" else _check_http(matrix, row)
    assert not problems, "\n".join(problems)


# -- listings show a limited key exactly its models ------------------------------------------
def test_listings_show_a_limited_key_only_its_models(matrix: Matrix) -> None:
    http = matrix.ctx.http
    admin = matrix.ctx.server.headers["authorization"]
    for key, models in ((matrix.keys.limited, [OTHER, EMBEDDER]), (matrix.keys.limited_pattern, [OTHER])):
        headers = {"authorization": key}
        assert [m["name"] for m in http.get("/v1/models", headers=headers).json()["models"]] == models
        assert [m["name"] for m in http.post("/v2/repository/index", json={}, headers=headers).json()] == models
        index = matrix.stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=(("authorization", key),))
        assert [m.name for m in index.models] == models
    everyone = {"authorization": admin}
    every_model = sorted([TARGET, OTHER, EMBEDDER])
    assert sorted(m["name"] for m in http.get("/v1/models", headers=everyone).json()["models"]) == every_model
    assert sorted(m["name"] for m in http.post("/v2/repository/index", json={}, headers=everyone).json()) == every_model
    index = matrix.stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=(("authorization", admin),))
    assert sorted(m.name for m in index.models) == every_model
    collections = [matrix.ctx.collection(TARGET), matrix.ctx.collection(OTHER)]
    listed = http.get("/v1/collections", headers={"authorization": matrix.keys.limited}).json()["collections"]
    assert [c["name"] for c in listed] == [OTHER]
    listed = http.get("/v1/collections", headers=everyone).json()["collections"]
    assert [c["name"] for c in listed] == sorted(collections)


def test_pattern_key_predicts_on_its_model_only(matrix: Matrix) -> None:
    headers = {"authorization": matrix.keys.limited_pattern, "content-type": "image/png"}
    http = matrix.ctx.http
    assert http.post(f"/v1/models/{OTHER}:predict", content=matrix.ctx.png, headers=headers).status_code == 200
    hidden = http.post(f"/v1/models/{TARGET}:predict", content=matrix.ctx.png, headers=headers)
    assert hidden.status_code == 404
    assert hidden.json()["detail"] == f"no model named {TARGET!r}"


def test_listings_show_a_limited_key_only_its_datasets_and_jobs(matrix: Matrix) -> None:
    http, ctx = matrix.ctx.http, matrix.ctx
    limited = {"authorization": matrix.keys.limited}
    assert [d["name"] for d in http.get("/v1/datasets", headers=limited).json()["datasets"]] == [OTHER]
    seen = http.get("/v1/jobs", headers=limited).json()["jobs"]
    assert {j["model"] for j in seen} == {OTHER}
    assert {ctx.queued[OTHER], ctx.cancelled[OTHER]} <= {j["id"] for j in seen}
    admin = ctx.server.headers
    assert sorted(d["name"] for d in http.get("/v1/datasets", headers=admin).json()["datasets"]) == [TARGET, OTHER]
    everyone = http.get("/v1/jobs", headers=admin).json()["jobs"]
    assert {*ctx.queued.values(), *ctx.cancelled.values()} <= {j["id"] for j in everyone}
