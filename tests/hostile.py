"""Hostile inputs as Hypothesis strategies, and the measure every property applies to them.

The property all of them serve (issue 8): a parser either returns a valid value or raises an
``ImaasError`` whose status is 4xx, never another exception, and the memory it allocates
while handling one input stays within a small multiple of that input's size.

Shared by the unit properties (``tests/unit/test_*_properties.py``) and the end-to-end run
against a real server (``tests/e2e/test_hostile_inputs.py``). ``PROFILE`` is derandomized
and has no example database, so a CI run tries the same examples every time.
"""

from __future__ import annotations

import io
import math
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from tritonclient.grpc import service_pb2 as pb

from imaas.errors import ImaasError
from tests.factories import png_header_only

PROFILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def examples(n: int) -> settings:
    """The shared profile with ``n`` examples."""
    return settings(PROFILE, max_examples=n)


# -- the measure -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a parser did with one input: its value or its error, and its peak allocation."""

    value: Any
    error: ImaasError | None
    peak: int  # bytes (tracemalloc) allocated at the peak while the call ran


def handle(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    """Call ``fn`` under tracemalloc; an ``ImaasError`` must be a 4xx, any other exception propagates.

    Tracing starts right before the call, so only memory allocated while handling the input
    counts (the input itself was allocated before). Pillow's pixel buffers and zlib's window
    are allocated outside Python's allocator and are not seen: the image properties bound
    pixels separately.
    """
    value: Any = None
    error: ImaasError | None = None
    tracemalloc.start()
    try:
        try:
            value = fn(*args, **kwargs)
        except ImaasError as exc:
            error = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if error is not None:
        assert 400 <= error.status < 500, f"{type(error).__name__} ({error.status}): {error.detail}"
    return Outcome(value, error, peak)


def assert_bounded(outcome: Outcome, input_size: int, factor: int, constant: int = 256 * 1024) -> None:
    """The peak allocation is at most ``factor`` times the input's size plus ``constant``."""
    bound = factor * input_size + constant
    what = "refused" if outcome.error is not None else "accepted"
    assert outcome.peak <= bound, f"{outcome.peak} bytes allocated for a {input_size}-byte input ({what})"


# -- JSON --------------------------------------------------------------------------------------

# Strings that protobuf and orjson can carry (no lone surrogates).
texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8)
json_ints = st.integers(-(2**63), 2**64 - 1)  # orjson's range
json_scalars = st.none() | st.booleans() | json_ints | st.floats() | texts
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4),
    max_leaves=16,
)
# Where an object is expected: any value, and values of each wrong type that are truthy
# (``x or {}`` lets the falsy ones through as an empty object).
not_objects = st.sampled_from([[1], [{}], "x", 1, 1.5, True]) | json_values

# What a query parameter, a version or a header length may look like when it should be a number.
UNICODE_DIGITS = ["²", "³", "¹", "٣", "۳", "३", "৩", "౩", "๓", "၃", "３", "𝟑", "⑶", "Ⅻ", "½", "𐒡"]
number_texts = (
    st.integers(-(10**20), 10**20).map(str)
    | st.text(alphabet="0123456789", min_size=1, max_size=6000)
    | st.lists(st.sampled_from([*UNICODE_DIGITS, "0", "1", "9", " ", "+", "-", "_", ".", "e", "x"]), max_size=8).map(
        "".join
    )
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
)

# -- OIP tensors -------------------------------------------------------------------------------

# The OIP datatypes and their little-endian ``struct`` codes: the tests compute expected
# tensors with ``struct``, independently of the codec's NumPy dtypes.
STRUCT_CODES = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
KNOWN_TYPES = [*STRUCT_CODES, "BYTES"]
HUGE_SHAPES: list[Any] = [
    [2_000_000_000],
    [4_000_000],
    [2**31],
    [2**32, 2**32],
    [2**63 - 1],
    [2**64 - 1],
    [1] * 65,
    [1] * 17,
    [0] * 17,
    [2_000_000_000, 0],
    [-1],
    [3, -1],
    [1.5],
    [2.0],
    ["3"],
    [True],
    [None],
    [[2]],
    [{}],
]
# BYTES, the datatype with length prefixes and object arrays, about half the time.
known_types = st.just("BYTES") | st.sampled_from(KNOWN_TYPES)
datatypes = known_types | texts
small_shapes = st.lists(st.integers(0, 3), max_size=3)
# Past the element budget, and within it but past what a few bytes of data can hold.
BIG_DIMS = [2_000_000_000, 2**31 - 1, 2**32, 8 * 1024 * 1024, 4_000_000]
dims = st.integers(0, 3) | json_ints | st.sampled_from(BIG_DIMS) | json_scalars
shapes: st.SearchStrategy[Any] = (
    small_shapes
    | st.lists(dims, max_size=5)
    | st.sampled_from(HUGE_SHAPES)
    | st.lists(st.integers(0, 2), min_size=17, max_size=70)
)


def _int_range(code: str) -> tuple[int, int]:
    bits = struct.calcsize(code) * 8
    return (0, 2**bits - 1) if code.isupper() else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def values_for(datatype: str) -> st.SearchStrategy[Any]:
    """Values a tensor of ``datatype`` holds exactly (floats representable in its width)."""
    if datatype == "BYTES":
        return texts
    code = STRUCT_CODES[datatype]
    if code == "?":
        return st.booleans()
    if code in "efd":
        width = {"e": 16, "f": 32, "d": 64}[code]
        return st.floats(width=width, allow_nan=False, allow_infinity=False)  # type: ignore[arg-type]
    low, high = _int_range(code)
    return st.integers(low, high)


def pack(datatype: str, values: list[Any]) -> bytes:
    """OIP binary data of ``values``: struct little-endian, or BYTES as uint32 length + bytes."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (to_bytes(v) for v in values))
    return struct.pack(f"<{len(values)}{STRUCT_CODES[datatype]}", *values)


def to_bytes(v: str | bytes) -> bytes:
    return v.encode() if isinstance(v, str) else v


def count(shape: Any) -> int | None:
    """Elements of a well-formed small shape, None for anything else."""
    if not isinstance(shape, list) or len(shape) > 16:
        return None
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 64 for d in shape):
        return None
    n = math.prod(shape)
    return n if n <= 64 else None


@st.composite
def bytes_blobs(draw: st.DrawFn, n: int) -> bytes:
    """Serialized BYTES for ``n`` elements: honest, with hostile length prefixes, or junk."""
    payloads = draw(st.lists(st.binary(max_size=8), min_size=n, max_size=n))
    kind = draw(st.sampled_from(["honest", "prefixes", "junk"]))
    if kind == "junk":
        return draw(st.binary(max_size=64))
    parts = []
    for p in payloads:
        prefix = len(p)
        if kind == "prefixes" and draw(st.booleans()):
            prefix = draw(st.integers(0, 2**32 - 1) | st.sampled_from([len(p) + 1, max(len(p) - 1, 0), 2**32 - 1]))
        parts.append(struct.pack("<I", prefix) + p)
    return b"".join(parts) + draw(st.binary(max_size=4))


@st.composite
def blobs(draw: st.DrawFn, datatype: Any, shape: Any) -> bytes:
    """Binary data for a tensor: the right size for its shape when that is knowable, or not."""
    n = count(shape)
    if n is None:
        n = draw(st.integers(0, 6))
    if datatype == "BYTES":
        return draw(bytes_blobs(n))
    size = struct.calcsize(STRUCT_CODES[datatype]) * n if datatype in STRUCT_CODES else draw(st.integers(0, 16))
    size = draw(st.just(size) | st.integers(0, size + 9))
    return draw(st.binary(min_size=size, max_size=size))


@st.composite
def json_data(draw: st.DrawFn, datatype: Any, shape: Any) -> Any:
    """JSON ``data``: right count and type, right count of anything, or any JSON value."""
    n = count(shape)
    kind = draw(st.sampled_from(["typed", "any-count", "any"]))
    if kind == "any" or n is None:
        return draw(json_values)
    if kind == "typed" and datatype in KNOWN_TYPES:
        values = draw(st.lists(values_for(datatype), min_size=n, max_size=n))
    else:
        values = draw(st.lists(json_scalars, min_size=n, max_size=n))
    if draw(st.booleans()) and isinstance(shape, list) and shape:
        return np.array(values, dtype=object).reshape(shape).tolist()  # nested, row-major
    return values


@dataclass
class ValidRequest:
    """A well-formed infer request and the tensors it carries (computed with ``struct``)."""

    body: bytes
    header_length: str | None
    expected: list[tuple[str, str, list[int], list[Any]]]  # name, datatype, shape, flat values


@st.composite
def well_formed_inputs(
    draw: st.DrawFn, name: str
) -> tuple[dict[str, Any], bytes, tuple[str, str, list[int], list[Any]]]:
    """One well-formed input (JSON flat or nested, or binary), its binary data, and what it carries."""
    datatype = draw(st.sampled_from(KNOWN_TYPES))
    shape = draw(small_shapes)
    n = math.prod(shape)
    values = draw(st.lists(values_for(datatype), min_size=n, max_size=n))
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    blob = b""
    if draw(st.booleans()):
        blob = pack(datatype, values)
        entry["parameters"] = {"binary_data_size": len(blob)}
    elif shape and draw(st.booleans()):
        entry["data"] = np.array(values, dtype=object).reshape(shape).tolist()
    else:
        entry["data"] = values
    flat = [to_bytes(v) for v in values] if datatype == "BYTES" else values
    return entry, blob, (name, datatype, shape, flat)


def rarely(draw: st.DrawFn, usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
    """``usual`` nine times in ten, ``odd`` otherwise: one hostile part at a time gets further."""
    return draw(odd if draw(st.integers(0, 9)) == 0 else usual)


@st.composite
def hostile_inputs(draw: st.DrawFn) -> tuple[Any, bytes]:
    """One input of a REST infer request built from hostile parts, and its binary data."""
    datatype = rarely(draw, datatypes, json_scalars)
    shape = rarely(draw, shapes, json_values)
    entry: dict[str, Any] = {"name": rarely(draw, st.just("image") | texts, json_scalars), "datatype": datatype}
    entry["shape"] = shape
    if draw(st.integers(0, 9)) == 0:
        del entry[draw(st.sampled_from(["name", "datatype", "shape"]))]
    mode = draw(st.sampled_from(["data", "data", "binary", "binary", "none"]))
    blob = b""
    if mode == "data":
        entry["data"] = draw(json_data(datatype, shape))
    elif mode == "binary":
        blob = draw(blobs(datatype, shape))
        odd_size = st.sampled_from([-1, 1.5, "8", True, [8]]) | st.integers(-3, 2**64 - 1) | json_scalars
        size = draw(st.just(len(blob)) | odd_size)
        entry["parameters"] = {"binary_data_size": size}
    else:
        entry["parameters"] = draw(not_objects)
    return rarely(draw, st.just(entry), json_values), blob


@st.composite
def hostile_oip_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A REST infer body and its ``Inference-Header-Content-Length``: junk bytes, any JSON, or
    requests assembled from good inputs and hostile parts (shapes, datatypes, data, binary
    sizes, outputs, header lengths)."""
    kind = draw(st.sampled_from(["bytes", "json", "tensors", "tensors", "tensors", "tensors"]))
    if kind == "bytes":
        return draw(st.binary(max_size=256)), draw(st.none() | number_texts)
    if kind == "json":
        doc = draw(json_values | st.fixed_dictionaries({"inputs": json_values}))
        return orjson.dumps(doc), draw(st.none() | number_texts)
    inputs: list[Any] = []
    tail = b""
    for i in range(draw(st.integers(1, 3)) if draw(st.integers(0, 9)) else 0):
        if draw(st.booleans()):  # a good input, so that parsing goes on to what follows it
            entry, blob, _ = draw(well_formed_inputs(f"in{i}"))
        else:
            entry, blob = draw(hostile_inputs())
        inputs.append(entry)
        tail += blob
    doc: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        output = st.fixed_dictionaries({"name": texts}, optional={"parameters": not_objects})
        doc["outputs"] = rarely(draw, st.lists(output | not_objects, max_size=2), not_objects)
    if draw(st.booleans()):
        doc["parameters"] = draw(not_objects | st.fixed_dictionaries({"binary_data_output": json_scalars}))
    if draw(st.booleans()):
        doc["id"] = draw(json_scalars)
    head = orjson.dumps(doc)
    body = head + tail + rarely(draw, st.just(b""), st.binary(min_size=1, max_size=8))
    exact = str(len(head)) if tail else draw(st.sampled_from([None, str(len(body))]))
    odd = st.integers(-3, len(body) + 3).map(str) | number_texts | st.none()
    return body, rarely(draw, st.just(exact), odd)


@st.composite
def valid_oip_requests(draw: st.DrawFn) -> ValidRequest:
    """Well-formed requests: every input as JSON (flat or nested) or binary data."""
    inputs = [draw(well_formed_inputs(f"in{i}")) for i in range(draw(st.integers(1, 3)))]
    head = orjson.dumps({"inputs": [entry for entry, _, _ in inputs]})
    tail = b"".join(blob for _, blob, _ in inputs)
    header = str(len(head)) if tail or draw(st.booleans()) else None
    return ValidRequest(head + tail, header, [e for _, _, e in inputs])


# -- gRPC --------------------------------------------------------------------------------------

# The typed contents field that carries each datatype (the OIP gRPC spec); FP16 has none.
CONTENTS_FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=8),
}
FIELD_OF = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
int64s = st.integers(-(2**63), 2**63 - 1)
grpc_shapes = (
    small_shapes
    | st.lists(st.integers(-2, 3) | int64s | st.sampled_from(BIG_DIMS), max_size=5)
    | st.sampled_from([s for s in HUGE_SHAPES if all(type(d) is int and -(2**63) <= d < 2**63 for d in s)])
    | st.lists(st.integers(0, 2), min_size=17, max_size=70)
)
grpc_params = st.builds(pb.InferParameter, int64_param=int64s) | st.sampled_from(
    [pb.InferParameter(bool_param=True), pb.InferParameter(string_param="3"), pb.InferParameter(double_param=2.5)]
)


@st.composite
def grpc_requests(draw: st.DrawFn, model_names: st.SearchStrategy[str] = texts) -> pb.ModelInferRequest:
    """``ModelInferRequest`` messages whose inputs each carry at most one fault (so that the
    parser gets past the others): an unknown datatype, a hostile shape (huge, negative, rank
    past 16), another typed contents field, a count that does not fit the shape, or raw
    contents of the wrong size; raw contents for all inputs, fewer or more; any outputs."""
    raw_mode = draw(st.sampled_from(["none", "none", "all", "all", "fewer", "more"]))
    inputs = []
    raws = []
    for _ in range(draw(st.integers(0, 3))):
        fault = draw(st.sampled_from(["none", "datatype", "shape", "field", "count", "big-count", "raw"]))
        datatype = draw(texts if fault == "datatype" else known_types)
        shape = draw(grpc_shapes if fault == "shape" else small_shapes)
        if fault == "big-count":  # within the element budget, far past the data sent
            shape = [draw(st.sampled_from(BIG_DIMS[-2:]))]
        n = count(shape)
        field = FIELD_OF.get(datatype, "bytes_contents")
        if fault == "field":
            field = draw(st.sampled_from(sorted(CONTENTS_FIELDS)))
        size = n if n is not None and fault not in ("count", "big-count") else draw(st.integers(0, 6))
        honest = fault not in ("raw", "count", "big-count") and field == FIELD_OF.get(datatype)
        element = values_for(datatype) if honest and datatype != "BYTES" else CONTENTS_FIELDS[field]
        values = draw(st.lists(element, min_size=size, max_size=size))
        typed = raw_mode == "none" or draw(st.integers(0, 3)) == 0
        contents = pb.InferTensorContents(**{field: values}) if typed else None
        inputs.append(
            pb.ModelInferRequest.InferInputTensor(name=draw(texts), datatype=datatype, shape=shape, contents=contents)
        )
        raws.append(pack(datatype, values) if honest else draw(blobs(datatype, shape)))
    raws = {"none": [], "all": raws, "fewer": raws[:-1], "more": [*raws, b"\x00" * 4]}[raw_mode]
    outputs = [
        pb.ModelInferRequest.InferRequestedOutputTensor(
            name=draw(texts), parameters=draw(st.dictionaries(st.sampled_from(["classification", "x"]), grpc_params))
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    return pb.ModelInferRequest(
        model_name=draw(model_names),
        model_version=draw(st.just("") | number_texts),
        id=draw(texts),
        inputs=inputs,
        outputs=outputs,
        raw_input_contents=raws,
    )


@dataclass
class ValidGrpc:
    """A well-formed ``ModelInferRequest`` and the tensors it carries."""

    request: pb.ModelInferRequest
    expected: list[tuple[str, str, list[int], list[Any]]]


@st.composite
def valid_grpc_requests(draw: st.DrawFn) -> ValidGrpc:
    """Well-formed requests: all inputs in raw_input_contents, or all in typed contents."""
    raw = draw(st.booleans())
    inputs = []
    raws = []
    expected = []
    for i in range(draw(st.integers(1, 3))):
        datatype = draw(st.sampled_from(KNOWN_TYPES if raw else [t for t in KNOWN_TYPES if t != "FP16"]))
        shape = draw(small_shapes)
        n = math.prod(shape)
        values_strategy = st.binary(max_size=8) if datatype == "BYTES" else values_for(datatype)
        values = draw(st.lists(values_strategy, min_size=n, max_size=n))
        contents = None if raw else pb.InferTensorContents(**{FIELD_OF[datatype]: values})
        inputs.append(
            pb.ModelInferRequest.InferInputTensor(name=f"in{i}", datatype=datatype, shape=shape, contents=contents)
        )
        raws.append(pack(datatype, values))
        expected.append((f"in{i}", datatype, shape, values))
    request = pb.ModelInferRequest(model_name="m", inputs=inputs, raw_input_contents=raws if raw else [])
    return ValidGrpc(request, expected)


# -- images ------------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _seed_images() -> dict[str, bytes]:
    rng = np.random.default_rng(8)
    rgb = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 255, (24, 32, 4), dtype=np.uint8), mode="RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "jpeg": _encode(rgb, "JPEG", quality=80),
        "jpeg-progressive-exif": _encode(rgb, "JPEG", progressive=True, exif=exif),
        "jpeg-grey": _encode(rgb.convert("L"), "JPEG"),
        "jpeg-cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "png": _encode(rgb, "PNG"),
        "png-rgba": _encode(rgba, "PNG"),
        "png-palette": _encode(rgb.convert("P"), "PNG"),
        "png-16bit": _encode(Image.fromarray(rng.integers(0, 65535, (24, 32), dtype=np.uint16)), "PNG"),
        "png-1bit": _encode(rgb.convert("1"), "PNG"),
        "gif": _encode(rgb.convert("P"), "GIF"),
        "webp": _encode(rgb, "WEBP"),
        "webp-lossless-rgba": _encode(rgba, "WEBP", lossless=True),
        "bmp": _encode(rgb, "BMP"),
        "tiff": _encode(rgb, "TIFF"),
        "tiff-deflate-cmyk": _encode(rgb.convert("CMYK"), "TIFF", compression="tiff_adobe_deflate"),
        "tiff-float": _encode(Image.fromarray(rng.standard_normal((24, 32)).astype(np.float32) * 1000), "TIFF"),
    }


SEED_IMAGES = _seed_images()
MAGIC = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
]


def _patch(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


def declared_size(fmt: str, width: int, height: int) -> bytes:
    """A real image whose header is rewritten to declare ``width`` x ``height`` (a bomb's header)."""
    if fmt == "png":
        return png_header_only(width & 0xFFFFFFFF, height & 0xFFFFFFFF)
    if fmt == "gif":  # the logical screen size, which Pillow reports as the image size
        return _patch(SEED_IMAGES["gif"], 6, struct.pack("<HH", width & 0xFFFF, height & 0xFFFF))
    if fmt == "bmp":  # signed: a negative height is a top-down bitmap
        w, h = (width % 2**31, (height % 2**32) - 2**31)
        return _patch(SEED_IMAGES["bmp"], 18, struct.pack("<ii", w, h))
    if fmt == "jpeg":  # the frame header (SOF0): precision, height, width
        data = SEED_IMAGES["jpeg"]
        sof = data.index(b"\xff\xc0")
        return _patch(data, sof + 5, struct.pack(">HH", height & 0xFFFF, width & 0xFFFF))
    if fmt == "webp":  # an extended (VP8X) header: canvas width-1 and height-1 on 24 bits
        vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
        vp8x += ((width - 1) % 2**24).to_bytes(3, "little") + ((height - 1) % 2**24).to_bytes(3, "little")
        body = b"WEBP" + vp8x + SEED_IMAGES["webp"][12:]
        return b"RIFF" + struct.pack("<I", len(body)) + body
    # TIFF: ImageWidth (256) and ImageLength (257) rewritten as LONG values in the first IFD
    data = bytearray(SEED_IMAGES["tiff"])
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * i
        tag = struct.unpack_from("<H", data, at)[0]
        if tag in (256, 257):
            struct.pack_into("<HHII", data, at, tag, 4, 1, (width if tag == 256 else height) & 0xFFFFFFFF)
    return bytes(data)


sides = st.integers(0, 3) | st.integers(0, 70_000) | st.sampled_from([2**16 - 1, 2**24, 2**31 - 1, 2**32 - 1])


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes (behind a format's magic or not), real images truncated or mutated, and
    headers that declare huge or empty sizes."""
    kind = draw(st.sampled_from(["random", "declared", "mutated", "mutated", "mutated", "mutated"]))
    if kind == "random":
        return draw(st.sampled_from([b"", *MAGIC])) + draw(st.binary(max_size=256))
    if kind == "declared":
        fmt = draw(st.sampled_from(["png", "gif", "bmp", "jpeg", "webp", "tiff"]))
        return declared_size(fmt, draw(sides), draw(sides))
    data = bytearray(SEED_IMAGES[draw(st.sampled_from(sorted(SEED_IMAGES)))])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "overwrite", "overwrite", "insert", "delete"]))
        # Anywhere past the magic bytes, sometimes in them (counted from the end, so that a
        # shrunk example keeps the data).
        at = len(data) - rarely(draw, st.integers(0, max(len(data) - 12, 0)), st.integers(0, len(data)))
        if op == "truncate":
            del data[at:]
        elif op == "overwrite":
            new = draw(st.binary(min_size=1, max_size=4) | st.sampled_from([b"\xff\xff", b"\x00\x00", b"\x7f\xff\xff"]))
            data[at : at + len(new)] = new
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


# -- bodies with Content-Encoding ----------------------------------------------------------------


@st.composite
def encoded_bodies(draw: st.DrawFn, limit: int) -> tuple[bytes, str | None, bytes | None]:
    """A body, its Content-Encoding, and what it inflates to when it is intact (None when not)."""
    encoding = draw(
        st.sampled_from([None, "", "identity", "gzip", "deflate", "GZIP ", "br", "gzip, deflate", "x-gzip"]) | texts
    )
    plain = draw(
        st.binary(max_size=256)
        | st.integers(0, 4 * limit).map(lambda n: b"\x00" * n)  # highly compressible: a small bomb
    )
    if encoding is None or encoding.strip().lower() not in ("gzip", "deflate"):
        return draw(st.binary(max_size=256)), encoding, None
    wbits = 31 if encoding.strip().lower() == "gzip" else 15
    packer = zlib.compressobj(wbits=wbits)
    body = packer.compress(plain) + packer.flush()
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "trailing"]))
    if damage == "truncate":
        return body[: draw(st.integers(0, max(len(body) - 1, 0)))], encoding, None
    if damage == "flip":
        at = draw(st.integers(0, len(body) - 1))
        return _patch(body, at, bytes([body[at] ^ draw(st.integers(1, 255))])), encoding, None
    if damage == "trailing":
        return body + draw(st.binary(min_size=1, max_size=8)), encoding, None
    return body, encoding, plain
