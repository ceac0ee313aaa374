"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers that take untrusted bytes.

Each target passes when every input is parsed to a value or refused with an ``ImaasError``
whose status is 4xx; any other exception, or a 5xx, is a crash (libFuzzer saves the input
that caused it under ``-artifact_prefix`` and exits non-zero). ``-rss_limit_mb`` turns an
unbounded allocation into a crash too.

Targets:
    oip    ``parse_request``: first byte odd = an Inference-Header-Content-Length taken from
           the next two bytes; the rest is the body.
    bytes  ``decode_bytes_elements``: the first four bytes are the element count (modulo the
           default element budget, as the budget is charged before it), the rest the data.
    image  ``decode_image`` with small limits, a 2-megapixel budget and a 64-pixel minimum.

Run (``tests/fuzz/test_fuzz.py`` runs each for a fixed number of runs)::

    python tests/fuzz/fuzz_codecs.py --target oip -runs=20000 -seed=1 CORPUS_DIR
    python tests/fuzz/fuzz_codecs.py --target image --seeds CORPUS_DIR   # write the seed corpus
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import atheris
import orjson

MAX_ELEMENTS = 8 * 1024 * 1024


class Code:
    """The code under test, imported by ``load`` with coverage instrumentation."""

    parse_request: Callable[..., Any]
    decode_bytes_elements: Callable[..., Any]
    decode_image: Callable[..., Any]
    limits: Any
    budget: Callable[[int], Any]
    error: type[Exception]


def load(target: str) -> None:
    """Import imaas instrumented; for images Pillow too: its format plugins are Python, and
    imported now (not lazily at the first open) they give the fuzzer coverage to follow."""
    with atheris.instrument_imports(include=["imaas", "PIL"] if target == "image" else ["imaas"]):
        from PIL import Image

        from imaas.api.oip_codec import parse_request
        from imaas.errors import ImaasError
        from imaas.imaging.decode import DecodeLimits, PixelBudget, decode_image
        from imaas.services.tensors import decode_bytes_elements

        if target == "image":
            Image.init()
    Code.parse_request = parse_request
    Code.decode_bytes_elements = decode_bytes_elements
    Code.decode_image = decode_image
    Code.limits = DecodeLimits(max_pixels=1_000_000, max_side=4_096, min_side=8)
    Code.budget = PixelBudget
    Code.error = ImaasError


def _refused_4xx(call: Callable[[], object]) -> None:
    try:
        call()
    except Code.error as exc:
        status = getattr(exc, "status", 500)
        if not 400 <= status < 500:
            raise AssertionError(f"{type(exc).__name__} has status {status}: {exc}") from exc


def fuzz_oip(data: bytes) -> None:
    header = None
    if data[:1] and data[0] & 1:
        header = str(int.from_bytes(data[1:3], "little"))
        data = data[3:]
    else:
        data = data[1:]
    _refused_4xx(lambda: Code.parse_request("m", None, data, header, MAX_ELEMENTS))


KEYS = ["inputs", "outputs", "name", "datatype", "shape", "data", "parameters", "binary_data_size"]
KEYS += ["binary_data_output", "binary_data", "classification", "id"]
STRINGS = ["BYTES", "FP32", "FP16", "UINT8", "BOOL", "INT64", "image", "x", "1", ""]


def _value(fdp: atheris.FuzzedDataProvider, depth: int) -> Any:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-2, 9)
    if kind == 3:
        return fdp.ConsumeInt(8)
    if kind == 4:
        return fdp.ConsumeRegularFloat()
    if kind == 5:
        return STRINGS[fdp.ConsumeIntInRange(0, len(STRINGS) - 1)]
    if kind in (6, 7):
        return _object(fdp, depth + 1)
    return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]


def _object(fdp: atheris.FuzzedDataProvider, depth: int) -> dict[str, Any]:
    return {
        KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]: _value(fdp, depth) for _ in range(fdp.ConsumeIntInRange(0, 5))
    }


def _odd(fdp: atheris.FuzzedDataProvider) -> bool:
    return fdp.ConsumeIntInRange(0, 7) == 0


def _input(fdp: atheris.FuzzedDataProvider) -> Any:
    """An input object: each field usually well-typed, sometimes any value."""
    if _odd(fdp):
        return _value(fdp, 1)
    shape = [fdp.ConsumeIntInRange(0, 3) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    entry: dict[str, Any] = {
        "name": _value(fdp, 3) if _odd(fdp) else STRINGS[fdp.ConsumeIntInRange(0, len(STRINGS) - 1)],
        "datatype": _value(fdp, 3) if _odd(fdp) else STRINGS[fdp.ConsumeIntInRange(0, 5)],
        "shape": _value(fdp, 2) if _odd(fdp) else shape,
    }
    if fdp.ConsumeBool():
        entry["data"] = [_value(fdp, 3) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    else:
        size = _value(fdp, 3) if _odd(fdp) else fdp.ConsumeIntInRange(0, 64)
        entry["parameters"] = _value(fdp, 2) if _odd(fdp) else {"binary_data_size": size}
    if _odd(fdp):
        entry.update(_object(fdp, 2))
    return entry


def fuzz_oip_doc(data: bytes) -> None:
    """Structure-aware: the fuzzer's bytes choose an infer request (its inputs, outputs and
    parameters, each field well-typed or any JSON value), binary data and the header length,
    as a byte-level mutation rarely keeps JSON valid."""
    fdp = atheris.FuzzedDataProvider(data)
    doc: dict[str, Any] = {"inputs": [_input(fdp) for _ in range(fdp.ConsumeIntInRange(1, 3))]}
    if fdp.ConsumeBool():
        doc["outputs"] = [_object(fdp, 1) if _odd(fdp) else {"name": "y", "parameters": _value(fdp, 2)}]
    for key in ("parameters", "id"):
        if fdp.ConsumeBool():
            doc[key] = _value(fdp, 1)
    head = orjson.dumps(doc)
    header = str(fdp.ConsumeIntInRange(0, 4096)) if _odd(fdp) else str(len(head))
    body = head + fdp.ConsumeBytes(fdp.remaining_bytes())
    _refused_4xx(lambda: Code.parse_request("m", None, body, header, MAX_ELEMENTS))


def fuzz_bytes(data: bytes) -> None:
    count = int.from_bytes(data[:4], "little") % (MAX_ELEMENTS + 1)
    _refused_4xx(lambda: Code.decode_bytes_elements(data[4:], count))


def fuzz_image(data: bytes) -> None:
    _refused_4xx(lambda: Code.decode_image(data, Code.limits, 64, "RGB", Code.budget(2_000_000)))


TARGETS = {"oip": fuzz_oip, "oip-doc": fuzz_oip_doc, "bytes": fuzz_bytes, "image": fuzz_image}


def seeds(target: str) -> list[bytes]:
    """A small starting corpus: well-formed inputs the fuzzer mutates."""
    if target == "image":
        from tests.hostile import SEED_IMAGES

        return list(SEED_IMAGES.values())
    if target == "bytes":
        elements = [b"", b"a", b"hello"]
        blob = b"".join(struct.pack("<I", len(e)) + e for e in elements)
        return [struct.pack("<I", len(elements)) + blob, struct.pack("<I", 0)]
    json = (
        b'{"id":"1","inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[[1.5,2]]},'
        b'{"name":"t","datatype":"BYTES","shape":[2],"data":["a","b"]}],'
        b'"outputs":[{"name":"y","parameters":{"classification":2,"binary_data":true}}],'
        b'"parameters":{"binary_data_output":true}}'
    )
    binary = (
        b'{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":9}},'
        b'{"name":"u","datatype":"UINT8","shape":[2,1],"parameters":{"binary_data_size":2}}]}'
    )
    tail = struct.pack("<I", 5) + b"hello" + b"\x01\x02"
    return [b"\x00" + json, b"\x01" + struct.pack("<H", len(binary)) + binary + tail]


# libFuzzer dictionary entries for the oip target: the protocol's keys and values.
OIP_TOKENS = [
    '"inputs"',
    '"outputs"',
    '"name"',
    '"datatype"',
    '"shape"',
    '"data"',
    '"parameters"',
    '"binary_data_size"',
    '"binary_data_output"',
    '"binary_data"',
    '"classification"',
    '"id"',
    '"BYTES"',
    '"FP32"',
    '"FP16"',
    '"UINT8"',
    '"BOOL"',
    '"INT64"',
    "2000000000",
    "-1",
    "[]",
    "{}",
    "null",
    "true",
    "1.5",
    '""',
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=sorted(TARGETS), required=True)
    parser.add_argument("--seeds", type=Path, help="write the seed corpus into this folder and exit")
    args, libfuzzer_args = parser.parse_known_args()
    if args.seeds is not None:
        args.seeds.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds(args.target)):
            (args.seeds / f"seed-{i}").write_bytes(seed)
        if args.target == "oip":
            quoted = (token.replace("\\", "\\\\").replace('"', '\\"') for token in OIP_TOKENS)
            lines = [f'kw{i}="{q}"' for i, q in enumerate(quoted)]
            (args.seeds.parent / "oip.dict").write_text("\n".join(lines) + "\n")
        return
    load(args.target)
    atheris.Setup([sys.argv[0], *libfuzzer_args], TARGETS[args.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
