"""Hostile credentials against the real server: any ``Authorization`` value but a real key
is a 401 of ours (REST, OIP REST) or ``UNAUTHENTICATED`` (gRPC), never a 5xx or a dropped
connection, and the server still answers the real key afterwards.

Hypothesis draws the values: near misses of the real key (one character changed, cut,
lengthened, its id with another secret, other schemes and spacing), arbitrary printable
and latin-1 text, and very long values.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from imaas.security.keys import new_key
from imaas.settings import Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier
from tests.hostile import examples

UNAUTHORIZED_CODES = {
    "missing_credentials",
    "malformed_credentials",
    "invalid_credentials",
    "key_revoked",
    "key_expired",
}
PNG = solid((200, 30, 30))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("keys-home")
    s = RunningServer(Settings(home=home)).start()
    model = tiny_classifier(Path(home) / "tiny.onnx")
    with model.open("rb") as f:
        r = httpx.post(
            f"{s.url}/v1/models/tiny/versions",
            headers=s.headers,
            files={"model": f},
            data={"manifest": "labels: [a, b, c, d]\n"},
        )
    assert r.status_code == 201, r.text
    yield s
    s.stop()


@st.composite
def near_misses(draw: st.DrawFn, real: str) -> str:
    """The real key changed just enough not to be it."""
    kind = draw(st.sampled_from(["flip", "cut", "extend", "other-secret", "case"]))
    if kind == "flip":
        i = draw(st.integers(0, len(real) - 1))
        alphabet = string.ascii_letters + string.digits + "-_"
        c = draw(st.sampled_from([a for a in alphabet if a != real[i]]))
        return real[:i] + c + real[i + 1 :]
    if kind == "cut":
        return real[: draw(st.integers(0, len(real) - 1))]
    if kind == "extend":
        return real + draw(st.text(alphabet=string.ascii_letters, min_size=1, max_size=5))
    if kind == "other-secret":
        key_id = real.split("_")[1]
        return new_key(key_id).text
    swapped = real.swapcase()
    return swapped if swapped != real else real + "x"


def header_values(real: str) -> st.SearchStrategy[str]:
    """Authorization values that are not the real key."""
    latin1 = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))
    schemes = st.sampled_from(["Bearer ", "bearer ", "BEARER  ", "Basic ", "Token ", "", "Bearer\t"])
    values = (
        st.builds(lambda s, k: s + k, schemes, near_misses(real))
        | st.builds(lambda s, t: s + t, schemes, latin1)
        | st.builds(lambda n: "Bearer " + "a" * n, st.integers(0, 6000))
    )
    # HTTP trims a field value's surrounding whitespace (h11 refuses to send it)
    return values.map(str.strip).filter(lambda v: v.split()[-1:] != [real])


def check_unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, f"{r.status_code}: {r.text[:300]}"
    if r.headers.get("content-type", "").startswith("application/problem+json"):
        assert r.json()["code"] in UNAUTHORIZED_CODES
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("surface", ["predict", "models", "oip-infer"])
def test_hostile_authorization_values_get_401(server: RunningServer, surface: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:

        @examples(120)
        @given(header_values(server.key))
        def probe(value: str) -> None:
            headers = {"authorization": value.encode("latin-1")}
            if surface == "predict":
                r = http.post("/v1/models/tiny:predict", content=PNG, headers=headers | {"content-type": b"image/png"})
            elif surface == "models":
                r = http.get("/v1/models", headers=headers)
            else:
                r = http.post("/v2/models/tiny/infer", json={"inputs": []}, headers=headers)
            check_unauthorized(r)

        probe()


def test_hostile_grpc_authorization_metadata_is_unauthenticated(server: RunningServer) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)

    @examples(80)
    @given(st.builds(lambda s, k: s + k, st.sampled_from(["Bearer ", ""]), near_misses(server.key)) | printable)
    def probe(value: str) -> None:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny"), metadata=[("authorization", value)], timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value.details()

    try:
        probe()
        ok = stub.ModelMetadata(
            pb.ModelMetadataRequest(name="tiny"), metadata=[("authorization", f"Bearer {server.key}")], timeout=30
        )
        assert ok.name == "tiny"
    finally:
        channel.close()


def test_the_real_key_still_works_after_the_probes(server: RunningServer) -> None:
    r = httpx.post(
        f"{server.url}/v1/models/tiny:predict", content=PNG, headers=server.headers | {"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny"


def test_readiness_names_models_only_to_a_key_that_may_read_them(server: RunningServer) -> None:
    anonymous = httpx.get(f"{server.url}/readyz")
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "ready", "loaded": [], "missing": [], "failed": []}
    admin = httpx.get(f"{server.url}/readyz", headers=server.headers).json()
    assert admin["loaded"] == ["tiny@1"]
    bad = httpx.get(f"{server.url}/readyz", headers={"authorization": "Bearer nope"})
    assert bad.status_code == 200  # a public probe: a bad key is ignored, not refused
    assert bad.json()["loaded"] == []
    made = httpx.post(
        f"{server.url}/v1/keys",
        headers=server.headers,
        json={"name": "other-team", "scopes": ["models:read"], "models": ["other-*"]},
    )
    assert made.status_code == 201, made.text
    limited = {"authorization": f"Bearer {made.json()['secret']}"}
    assert httpx.get(f"{server.url}/readyz", headers=limited).json()["loaded"] == []
