"""Hostile requests against the real server: every answer is a 4xx or a 200, never a 5xx or
a dropped connection, and the server still predicts correctly afterwards.

Hypothesis builds the requests (``tests/hostile.py``): ``/v1`` predict calls with any
model name, query string, Content-Type, Content-Encoding and body (images truncated,
mutated or declaring huge sizes, JSON with base64, multipart); OIP REST infer calls
(JSON and binary tensor data, hostile shapes and header lengths, encoded images as BYTES);
and gRPC ``ModelInfer`` messages. Each test sends a bounded number, derandomized.
"""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.conftest import RunningServer
from tests.hostile import (
    examples,
    grpc_requests,
    hostile_oip_bodies,
    image_bytes,
    json_scalars,
    json_values,
    not_objects,
    number_texts,
    rarely,
    texts,
)

# Pillow (in the server, in this process) warns about the broken TIFF tags these inputs are made of.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

CATS = range(281, 286)
SERVED = ["mobilenet-v2", "efficientnet-lite0"]
MODELS = [*SERVED, "mobilenet-v2@1", "mobilenet-v2:production", "nope", "Bad Name"]
model_names = st.sampled_from(MODELS) | texts
printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
# Allowed gRPC answers: OK or the codes the server maps its 4xx errors to (and gRPC's own
# RESOURCE_EXHAUSTED for a message past the size limit); never INTERNAL, UNKNOWN, UNAVAILABLE.
GRPC_4XX = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.fixture(scope="module")
def http(zoo_server: RunningServer) -> Iterator[httpx.Client]:
    """A client with the server's key that opens a connection per request: a dropped one fails
    the request that dropped it."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=zoo_server.url, timeout=60, limits=limits, headers=zoo_server.headers) as c:
        yield c


@pytest.fixture(scope="module")
def stub(zoo_server: RunningServer) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{zoo_server.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def key(zoo_server: RunningServer) -> tuple[tuple[str, str], ...]:
    """The server's key as gRPC metadata."""
    return tuple(zoo_server.headers.items())


def header_value(text: str) -> bytes:
    """``text`` as a header value HTTP can carry (no control characters or edge whitespace)."""
    return "".join(c for c in text if c.isprintable()).strip()[:300].encode()


@st.composite
def encodings(draw: st.DrawFn, body: bytes) -> tuple[bytes, dict[str, bytes]]:
    """``body`` sent as is, compressed as its Content-Encoding says, or labelled with a wrong one."""
    kind = draw(st.sampled_from(["none", "none", "none", "gzip", "deflate", "label"]))
    if kind == "gzip":
        return gzip.compress(body), {"content-encoding": b"gzip"}
    if kind == "deflate":
        return zlib.compress(body), {"content-encoding": b"deflate"}
    if kind == "label":
        return body, {"content-encoding": header_value(draw(st.sampled_from(["gzip", "deflate", "br"]) | printable))}
    return body, {}


@st.composite
def predict_calls(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]], dict[str, bytes], bytes]:
    """A ``/v1`` predict call: path, query, headers and body."""
    path = f"/v1/models/{quote(rarely(draw, st.sampled_from(MODELS), texts), safe='@:')}:predict"
    keys = st.sampled_from(["top_k", "version", "alias"]) | texts
    pairs = st.lists(st.tuples(keys, number_texts | texts | st.sampled_from(["production", "canary"])), max_size=3)
    query = draw(st.just([]) | st.just([("top_k", "3")]) | pairs)
    kind = draw(st.sampled_from(["raw", "raw", "json", "multipart", "other"]))
    if kind == "raw":
        ctype = draw(st.sampled_from(["image/jpeg", "image/png", "image/webp", "application/octet-stream", "image/"]))
        body = draw(image_bytes())
    elif kind == "json":
        ctype = "application/json"
        image = base64.b64encode(draw(image_bytes())).decode()
        data = draw(st.just(image) | texts | json_scalars)
        doc = draw(
            st.fixed_dictionaries(
                {"images": st.lists(st.fixed_dictionaries({"data": st.just(data)}, optional={"filename": texts}))},
                optional={"top_k": json_scalars},
            )
            | json_values
        )
        body = orjson.dumps(doc)
    elif kind == "multipart":
        boundary = draw(st.just("xyz") | printable)
        ctype = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data"]))
        parts = b""
        for i in range(draw(st.integers(0, 3))):
            disposition = draw(
                st.sampled_from([f'form-data; name="f{i}"; filename="a.jpg"', f'form-data; name="f{i}"'])
            )
            parts += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            parts += draw(image_bytes()) + b"\r\n"
        body = parts + (f"--{boundary}--\r\n".encode() if draw(st.booleans()) else b"")
    else:
        ctype = draw(st.sampled_from(["", "text/plain", "application/x-www-form-urlencoded"]) | printable)
        body = draw(st.binary(max_size=128))
    body, headers = draw(encodings(body))
    if ctype:
        headers["content-type"] = header_value(ctype)
    return path, query, headers, body


@st.composite
def infer_calls(draw: st.DrawFn) -> tuple[str, dict[str, bytes], bytes]:
    """An OIP REST infer call: path, headers and body (hostile tensors, or images as BYTES)."""
    name = quote(rarely(draw, st.sampled_from(SERVED), model_names), safe="")
    version = rarely(draw, st.sampled_from([None, "1"]), number_texts)
    path = f"/v2/models/{name}/infer" if version is None else f"/v2/models/{name}/versions/{quote(version)}/infer"
    if draw(st.booleans()):
        body, header_length = draw(hostile_oip_bodies())
    else:
        images = draw(st.lists(image_bytes(), min_size=1, max_size=2))
        blob = b"".join(len(i).to_bytes(4, "little") + i for i in images)
        shape = draw(st.sampled_from([[len(images)], [len(images), 1], [1, len(images)], [0], [2_000_000_000]]))
        tensor = {"name": "image", "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": len(blob)}}
        logits = st.fixed_dictionaries({"name": st.just("logits")}, optional={"parameters": not_objects})
        classify = st.just({"name": "logits", "parameters": {"classification": 3}})
        outputs = draw(st.lists(classify | logits, max_size=2) | json_values)
        head = orjson.dumps({"inputs": [tensor], "outputs": outputs})
        body, header_length = head + blob, str(len(head))
    body, headers = draw(encodings(body))
    if header_length is not None:
        headers["inference-header-content-length"] = header_value(header_length)
    headers["content-type"] = b"application/octet-stream"
    return path, headers, body


def assert_4xx_or_200(r: httpx.Response) -> None:
    assert r.status_code == 200 or 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:500]}"


@examples(150)
@given(predict_calls())
def test_hostile_predict_calls_get_4xx_or_200(http: httpx.Client, call: Any) -> None:
    path, query, headers, body = call
    assert_4xx_or_200(http.post(path, params=query, headers=headers, content=body))


@examples(150)
@given(infer_calls())
def test_hostile_oip_rest_calls_get_4xx_or_200(http: httpx.Client, call: Any) -> None:
    path, headers, body = call
    assert_4xx_or_200(http.post(path, headers=headers, content=body))


@st.composite
def grpc_image_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """Encoded images (truncated, mutated, huge) as the BYTES ``image`` input, in raw or typed contents."""
    images = draw(st.lists(image_bytes(), min_size=1, max_size=2))
    shape = draw(st.sampled_from([[len(images)], [len(images), 1], [0], [2_000_000_000]]))
    tensor = pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=shape)
    outputs = []
    if draw(st.booleans()):
        classification = pb.InferParameter(int64_param=draw(st.integers(-(2**63), 2**63 - 1)))
        output = pb.ModelInferRequest.InferRequestedOutputTensor(
            name="logits", parameters={"classification": classification}
        )
        outputs.append(output)
    if draw(st.booleans()):
        tensor.contents.bytes_contents.extend(images)
        return pb.ModelInferRequest(model_name=draw(st.sampled_from(SERVED)), inputs=[tensor], outputs=outputs)
    raw = b"".join(len(i).to_bytes(4, "little") + i for i in images)
    return pb.ModelInferRequest(
        model_name=draw(st.sampled_from(SERVED)), inputs=[tensor], outputs=outputs, raw_input_contents=[raw]
    )


@examples(150)
@given(grpc_requests(model_names=model_names) | grpc_image_requests(), st.none() | printable)
def test_hostile_grpc_requests_get_4xx_codes_or_ok(
    stub: Any, key: tuple[tuple[str, str], ...], request: pb.ModelInferRequest, rid: str | None
) -> None:
    metadata = [*key, ("x-request-id", rid)] if rid else list(key)
    code, details = grpc.StatusCode.OK, ""
    try:
        stub.ModelInfer(request, timeout=60, metadata=metadata)
    except grpc.RpcError as exc:  # a dropped connection is UNAVAILABLE, a server error INTERNAL or UNKNOWN
        code, details = exc.code(), exc.details()
    assert code == grpc.StatusCode.OK or code in GRPC_4XX, f"{code}: {details}"


def test_the_server_still_predicts_after_hostile_calls(
    zoo_server: RunningServer, http: httpx.Client, photos: dict[str, bytes]
) -> None:
    """Runs after the tests above (file order): the same server answers ordinary calls correctly."""
    r = http.post("/v1/models/mobilenet-v2:predict", content=photos["chelsea"], headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["predictions"][0]["index"] in CATS
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{zoo_server.grpc_port}")
    try:
        image = grpcclient.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([photos["chelsea"]], dtype=object))
        out = grpcclient.InferRequestedOutput("logits", class_count=1)
        top = client.infer("mobilenet-v2", [image], outputs=[out], headers=dict(zoo_server.headers)).as_numpy("logits")
    finally:
        client.close()
    assert int(top.reshape(-1)[0].decode().split(":")[1]) in CATS
