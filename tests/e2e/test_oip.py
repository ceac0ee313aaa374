"""Open Inference Protocol with the real tritonclient (HTTP, gRPC, and their aio clients)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from imaas.domain import ModelRef
from imaas.settings import Settings
from tests.conftest import RunningServer
from tests.factories import tiny_classifier

GOLDEN = Path(__file__).parent / "golden"
CATS = range(281, 286)


@pytest.fixture(scope="module")
def oip_server(zoo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The zoo plus a tiny deterministic model (for golden files), served over REST and gRPC."""
    from imaas.services.container import build_services

    home = tmp_path_factory.mktemp("oip") / "home"
    shutil.copytree(zoo_home, home)
    services = build_services(Settings(home=home))
    model = tiny_classifier(home.parent / "tiny.onnx", size=(4, 4))
    services.models.push_file("tiny", model, {"labels": ["red", "blue", "green", "grey"]})
    asyncio.run(services.close())
    server = RunningServer(Settings(home=home)).start()
    yield server
    server.stop()


@pytest.fixture
def auth(oip_server: RunningServer) -> dict[str, str]:
    """The server's key as tritonclient sends it: ``headers=`` (over gRPC, as metadata, so lowercase).

    Pass a copy to each call (``headers=dict(auth)``): tritonclient's HTTP ``infer`` adds
    ``Inference-Header-Content-Length`` to the very dict it is given.
    """
    return dict(oip_server.headers)


@pytest.fixture
def http_client(oip_server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{oip_server.port}", concurrency=32)
    yield client
    client.close()


@pytest.fixture
def grpc_client(oip_server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{oip_server.grpc_port}")
    yield client
    client.close()


def _jpeg_input(module: object, photos: dict[str, bytes], names: list[str]) -> object:
    inp = module.InferInput("image", [len(names)], "BYTES")  # type: ignore[attr-defined]
    inp.set_data_from_numpy(np.array([photos[n] for n in names], dtype=object))
    return inp


def _reference(oip_server: RunningServer, x: np.ndarray) -> np.ndarray:
    """mobilenet-v2's logits computed by ONNX Runtime directly on its stored file."""
    services = oip_server.app.state.services
    version = services.registry.resolve(ModelRef("mobilenet-v2"))
    session = ort.InferenceSession(str(services.artifacts.open_path(version.sha256)))
    return session.run(None, {"input": x})[0]


# -- health and metadata -------------------------------------------------------------------
def test_health_and_server_metadata(
    http_client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient
) -> None:
    for c in (http_client, grpc_client):
        assert c.is_server_live()
        assert c.is_server_ready()
    md = http_client.get_server_metadata()
    assert md["name"] == "imaas"
    assert {"binary_tensor_data", "classification", "model_repository"} <= set(md["extensions"])
    assert grpc_client.get_server_metadata().name == "imaas"


def test_model_metadata_documents_both_paths(
    http_client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient, auth: dict[str, str]
) -> None:
    md = http_client.get_model_metadata("mobilenet-v2", headers=dict(auth))
    assert md["platform"] == "onnxruntime_onnx"
    assert md["versions"] == ["1"]
    assert md["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]},
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
    ]
    assert md["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]
    assert http_client.get_model_metadata("mobilenet-v2", "1", headers=dict(auth)) == md
    g = grpc_client.get_model_metadata("mobilenet-v2", as_json=True, headers=dict(auth))
    assert [i["name"] for i in g["inputs"]] == ["input", "image"]
    assert [int(d) for d in g["outputs"][0]["shape"]] == [-1, 1000]
    assert http_client.is_model_ready("mobilenet-v2", headers=dict(auth))
    assert grpc_client.is_model_ready("mobilenet-v2", "1", headers=dict(auth))


# -- inference ------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False])
def test_http_jpeg_bytes_with_classification(
    http_client: httpclient.InferenceServerClient, photos: dict[str, bytes], binary: bool, auth: dict[str, str]
) -> None:
    inp = _jpeg_input(httpclient, photos, ["chelsea", "coffee"])
    out = httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=3)
    result = http_client.infer("mobilenet-v2", [inp], outputs=[out], headers=dict(auth))
    top = result.as_numpy("logits")
    assert top.shape == (2, 3)
    text = [v.decode() if isinstance(v, bytes) else v for v in top.reshape(-1)]  # JSON answers str, binary bytes
    score, index, label = text[0].split(":", 2)
    assert int(index) in CATS
    assert "cat" in label
    assert 0 < float(score) <= 1
    assert int(text[3].split(":")[1]) in {967, 968, 504}


def test_http_raw_tensor_matches_onnx_runtime(
    oip_server: RunningServer, http_client: httpclient.InferenceServerClient, auth: dict[str, str]
) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    for binary in (True, False):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("logits", binary_data=binary)
        got = http_client.infer("mobilenet-v2", [inp], outputs=[out], model_version="1", headers=dict(auth)).as_numpy(
            "logits"
        )
        np.testing.assert_allclose(got, _reference(oip_server, x), atol=1e-4)


def test_grpc_jpeg_and_raw(
    oip_server: RunningServer,
    grpc_client: grpcclient.InferenceServerClient,
    photos: dict[str, bytes],
    auth: dict[str, str],
) -> None:
    inp = _jpeg_input(grpcclient, photos, ["chelsea"])
    out = grpcclient.InferRequestedOutput("logits", class_count=2)
    top = grpc_client.infer("efficientnet-lite0", [inp], outputs=[out], headers=dict(auth)).as_numpy("logits")
    assert int(top[0][0].decode().split(":")[1]) in CATS
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224), dtype=np.float32)
    raw = grpcclient.InferInput("input", list(x.shape), "FP32")
    raw.set_data_from_numpy(x)
    got = grpc_client.infer("mobilenet-v2", [raw], headers=dict(auth)).as_numpy("logits")
    np.testing.assert_allclose(got, _reference(oip_server, x), atol=1e-4)


def test_grpc_typed_contents_instead_of_raw(
    oip_server: RunningServer, photos: dict[str, bytes], auth: dict[str, str]
) -> None:
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224), dtype=np.float32)
    with grpc.insecure_channel(
        f"127.0.0.1:{oip_server.grpc_port}", options=[("grpc.max_send_message_length", 32 << 20)]
    ) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(x.shape))
        tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
        response = stub.ModelInfer(
            pb.ModelInferRequest(model_name="mobilenet-v2", inputs=[tensor]), metadata=tuple(auth.items())
        )
        got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(1, 1000)
        np.testing.assert_allclose(got, _reference(oip_server, x), atol=1e-4)
        image = pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])
        image.contents.bytes_contents.append(photos["chelsea"])
        response = stub.ModelInfer(
            pb.ModelInferRequest(model_name="mobilenet-v2", inputs=[image]), metadata=tuple(auth.items())
        )
        logits = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
        assert int(logits.argmax()) in CATS


@pytest.mark.parametrize("case", ["tiny_raw", "tiny_classification", "tiny_nested_binary_output"])
def test_golden_rest_request_and_response(oip_server: RunningServer, case: str) -> None:
    request = json.loads((GOLDEN / f"{case}_request.json").read_text())
    expected = json.loads((GOLDEN / f"{case}_response.json").read_text())
    r = httpx.post(f"{oip_server.url}/v2/models/tiny/infer", json=request, headers=oip_server.headers)
    assert r.status_code == 200, r.text
    if "inference-header-content-length" in r.headers:
        split = int(r.headers["inference-header-content-length"])
        got = json.loads(r.content[:split])
        binary = r.content[split:]
        assert len(binary) == got["outputs"][0]["parameters"]["binary_data_size"]
        got["outputs"][0]["data"] = np.frombuffer(binary, dtype="<f4").tolist()
        del got["outputs"][0]["parameters"]
    else:
        got = r.json()
    assert {k: v for k, v in got.items() if k != "outputs"} == {k: v for k, v in expected.items() if k != "outputs"}
    assert len(got["outputs"]) == len(expected["outputs"])
    for g, e in zip(got["outputs"], expected["outputs"], strict=True):
        assert (g["name"], g["datatype"], g["shape"]) == (e["name"], e["datatype"], e["shape"])
        if e["datatype"] == "BYTES":
            assert g["data"] == e["data"]
        else:
            np.testing.assert_allclose(g["data"], e["data"], rtol=1e-5)


# -- repository extension -------------------------------------------------------------------
def test_repository_index_load_unload(
    http_client: httpclient.InferenceServerClient,
    grpc_client: grpcclient.InferenceServerClient,
    photos: dict[str, bytes],
    auth: dict[str, str],
) -> None:
    index = {m["name"]: m for m in http_client.get_model_repository_index(headers=dict(auth))}
    assert index["mobilenet-v2"] == {"name": "mobilenet-v2", "version": "1", "state": "READY", "reason": ""}
    http_client.unload_model("efficientnet-lite0", headers=dict(auth))
    assert not http_client.is_model_ready("efficientnet-lite0", headers=dict(auth))
    assert http_client.is_server_ready()  # an operator's unload does not make the server unready
    ready = {
        m["name"]
        for m in http_client.get_model_repository_index(headers=dict(auth), query_params=None)
        if m["state"] == "READY"
    }
    assert "efficientnet-lite0" not in ready
    grpc_client.load_model("efficientnet-lite0", headers=dict(auth))
    assert grpc_client.is_model_ready("efficientnet-lite0", headers=dict(auth))
    grpc_client.unload_model("efficientnet-lite0", headers=dict(auth))
    assert not grpc_client.is_model_ready("efficientnet-lite0", headers=dict(auth))
    states = {m.name: m.state for m in grpc_client.get_model_repository_index(headers=dict(auth)).models}
    assert states["efficientnet-lite0"] == "UNAVAILABLE"
    http_client.load_model("efficientnet-lite0", headers=dict(auth))
    assert http_client.is_model_ready("efficientnet-lite0", headers=dict(auth))
    with pytest.raises(InferenceServerException):
        http_client.load_model("no-such-model", headers=dict(auth))


# -- one queue for every protocol -----------------------------------------------------------
def test_oip_and_v1_share_one_batch_queue(
    oip_server: RunningServer,
    http_client: httpclient.InferenceServerClient,
    photos: dict[str, bytes],
    auth: dict[str, str],
) -> None:
    engine = oip_server.app.state.services.inference.engine
    queue = engine.get(("mobilenet-v2", 1)).queue
    before = queue.stats.items
    httpx.post(
        f"{oip_server.url}/v1/models/mobilenet-v2:predict",
        content=photos["chelsea"],
        headers={**auth, "Content-Type": "image/jpeg"},
    ).raise_for_status()
    http_client.infer("mobilenet-v2", [_jpeg_input(httpclient, photos, ["chelsea", "rocket"])], headers=dict(auth))
    assert queue.stats.items == before + 3


# -- concurrency ----------------------------------------------------------------------------
def test_async_infer_concurrency_32(
    http_client: httpclient.InferenceServerClient, photos: dict[str, bytes], auth: dict[str, str]
) -> None:
    inp = _jpeg_input(httpclient, photos, ["chelsea"])
    pending = [http_client.async_infer("mobilenet-v2", [inp], headers=dict(auth)) for _ in range(64)]
    results = [p.get_result() for p in pending]
    assert all(int(r.as_numpy("logits").argmax()) in CATS for r in results)


def test_aio_clients_concurrency_32(oip_server: RunningServer, photos: dict[str, bytes], auth: dict[str, str]) -> None:
    async def run() -> tuple[list[int], list[int]]:
        http = httpaio.InferenceServerClient(f"127.0.0.1:{oip_server.port}", conn_limit=32)
        grpc_c = grpcaio.InferenceServerClient(f"127.0.0.1:{oip_server.grpc_port}")
        try:
            h_in = _jpeg_input(httpclient, photos, ["chelsea"])
            g_in = _jpeg_input(grpcclient, photos, ["chelsea"])
            h = await asyncio.gather(*(http.infer("mobilenet-v2", [h_in], headers=dict(auth)) for _ in range(32)))
            g = await asyncio.gather(*(grpc_c.infer("mobilenet-v2", [g_in], headers=dict(auth)) for _ in range(32)))
            return ([int(r.as_numpy("logits").argmax()) for r in h], [int(r.as_numpy("logits").argmax()) for r in g])
        finally:
            await http.close()
            await grpc_c.close()

    h, g = asyncio.run(run())
    assert len(h) == len(g) == 32
    assert all(i in CATS for i in h + g)


# -- bad input -----------------------------------------------------------------------------
def _post(
    server: RunningServer, body: bytes, header_len: int | None = None, model: str = "mobilenet-v2"
) -> httpx.Response:
    headers = {**server.headers, "Content-Type": "application/octet-stream"}
    if header_len is not None:
        headers["Inference-Header-Content-Length"] = str(header_len)
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=body, headers=headers)


def _binary_request(
    x: np.ndarray, datatype: str = "FP32", declared: int | None = None, shape: list[int] | None = None
) -> tuple[bytes, int]:
    raw = x.tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": datatype,
                    "shape": shape or list(x.shape),
                    "parameters": {"binary_data_size": declared or len(raw)},
                }
            ]
        }
    ).encode()
    return head + raw, len(head)


def test_bad_inputs_get_the_protocol_error_form(oip_server: RunningServer) -> None:
    x = np.zeros((1, 3, 224, 224), dtype=np.float32)
    cases = {
        "wrong datatype": _binary_request(x.astype(np.float64), "FP64"),
        "shape mismatch": _binary_request(np.zeros((1, 3, 100, 100), dtype=np.float32)),
        "binary size mismatch": _binary_request(x, declared=len(x.tobytes()) - 4),
        "size beyond body": _binary_request(x, declared=len(x.tobytes()) + 4),
        "truncated body": (_binary_request(x)[0][:-1000], _binary_request(x)[1]),
        "header longer than body": (b'{"inputs": []}', 500),
        "not json": (b"\x00\x01garbage", None),
        "element count mismatch": (
            json.dumps(
                {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [1.0, 2.0]}]}
            ).encode(),
            None,
        ),
        "unknown input": (
            json.dumps({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1], "data": [1]}]}).encode(),
            None,
        ),
        "hostile image": (
            json.dumps(
                {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not a jpeg"]}]}
            ).encode(),
            None,
        ),
    }
    for case, (body, header_len) in cases.items():
        r = _post(oip_server, body, header_len)
        assert r.status_code == 400, (case, r.text)
        assert set(r.json()) == {"error"}, case
        assert r.json()["error"], case
    missing = _post(
        oip_server, b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}', model="nope"
    )
    assert missing.status_code == 404
    assert "error" in missing.json()


def test_grpc_bad_inputs_get_status_codes(grpc_client: grpcclient.InferenceServerClient, auth: dict[str, str]) -> None:
    bad = grpcclient.InferInput("input", [1, 3, 224, 224], "FP64")
    bad.set_data_from_numpy(np.zeros((1, 3, 224, 224), dtype=np.float64))
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("mobilenet-v2", [bad], headers=dict(auth))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    shape = grpcclient.InferInput("input", [1, 3, 10, 10], "FP32")
    shape.set_data_from_numpy(np.zeros((1, 3, 10, 10), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("mobilenet-v2", [shape], headers=dict(auth))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as info:
        grpc_client.get_model_metadata("nope", headers=dict(auth))
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert grpc_client.is_server_live()


def test_a_request_for_an_unknown_output_is_refused_before_the_model_runs(
    oip_server: RunningServer,
    http_client: httpclient.InferenceServerClient,
    photos: dict[str, bytes],
    auth: dict[str, str],
) -> None:
    queue = oip_server.app.state.services.inference.engine.get(("mobilenet-v2", 1)).queue
    before = queue.stats.items
    wrong = httpclient.InferRequestedOutput("nope")
    with pytest.raises(InferenceServerException, match="unknown output 'nope'"):
        http_client.infer(
            "mobilenet-v2", [_jpeg_input(httpclient, photos, ["chelsea"])], outputs=[wrong], headers=dict(auth)
        )
    assert queue.stats.items == before  # nothing was queued, so no inference was spent on it
