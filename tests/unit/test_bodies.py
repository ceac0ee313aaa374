"""Request bodies: compressed bodies inflate within the limit; JSON is bounded before orjson sees it."""

from __future__ import annotations

import gzip

import orjson
import pytest

from imaas.api import oip_codec
from imaas.api.bodies import check_json_size, decompress
from imaas.errors import InvalidRequest, PayloadTooLarge


def test_json_with_too_many_containers_or_values_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(_body: bytes) -> object:
        raise AssertionError("orjson.loads was called")

    monkeypatch.setattr(oip_codec.orjson, "loads", never)
    nested = b'{"inputs": [{"name": "x", "extra": [' + b",".join([b"[0]"] * 200_000) + b"]}]}"
    with pytest.raises(PayloadTooLarge, match="arrays and objects; the limit is 100000"):
        oip_codec.parse_request("m", None, nested, None, max_elements=10**9, max_json_values=1_000_000)
    flat = b'{"inputs": [{"name": "x", "data": [' + b",".join([b"0"] * 1_100_000) + b"]}]}"
    with pytest.raises(PayloadTooLarge, match=r"about 11000\d\d values; the limit is 1000000"):
        oip_codec.parse_request("m", None, flat, None, max_elements=10**9, max_json_values=1_000_000)


def test_the_counts_never_come_out_below_the_documents() -> None:
    doc = {"inputs": [{"name": "x", "shape": [2, 2], "data": [[1, 2], [3, 4]]}], "id": "a,b[c"}
    body = orjson.dumps(doc)
    # 7 arrays and objects, and a "[" inside a string: counting may only come out larger
    check_json_size(body, max_values=20, max_containers=8)
    with pytest.raises(PayloadTooLarge, match="the JSON has 8 arrays and objects"):
        check_json_size(body, max_values=20, max_containers=7)


def test_decompress_inflates_within_the_limit_and_refuses_past_it() -> None:
    assert decompress(gzip.compress(b"x" * 1000), "gzip", 1000) == b"x" * 1000
    assert decompress(b"plain", None, 10) == b"plain"
    assert decompress(b"plain", "identity", 10) == b"plain"
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(b"x" * 1001), "gzip", 1000)
    with pytest.raises(InvalidRequest, match="truncated"):
        decompress(gzip.compress(b"x" * 1000)[:-8], "gzip", 1000)
    with pytest.raises(InvalidRequest, match="unsupported Content-Encoding"):
        decompress(b"x", "br", 1000)
