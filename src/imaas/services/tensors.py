"""Open Inference Protocol tensors: datatypes, JSON data, binary data and BYTES elements.

Protocol-neutral pure functions shared by the REST and gRPC edges. A declared shape is
checked before anything is allocated for it: its rank, its element count against the
request's ``ElementBudget``, and the count against the data actually received (a BYTES
element takes at least 4 bytes, so ``[2000000000]`` with a kilobyte of data is refused
before an array of two billion objects exists).

Example::

    array = from_json_data("FP32", [1, 2], [[0.5, 1.5]])
    raw = to_raw(array, "FP32")               # little-endian bytes, as binary_data / raw_*_contents
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from imaas.errors import InvalidInput, PayloadTooLarge

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
ONNX_TO_OIP = {
    "float32": "FP32",
    "float16": "FP16",
    "uint8": "UINT8",
    "int8": "INT8",
    "int32": "INT32",
    "int64": "INT64",
    "float64": "FP64",
    "bool": "BOOL",
}


# what JSON numbers may fill a tensor of each NumPy kind: floats take any number, integers
# integers (and booleans), booleans only booleans
_JSON_KINDS = {"f": "biuf", "i": "biu", "u": "biu", "b": "b"}
MAX_RANK = 16
BYTES_PREFIX = 4  # the uint32 length before each serialized BYTES element


class ElementBudget:
    """How many tensor elements one request may still declare (all its inputs together).

    Example::

        budget = ElementBudget(8_388_608)
        budget.take([1, 3, 224, 224])  # 150528; raises PayloadTooLarge past the budget
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def take(self, shape: list[int]) -> int:
        """Check ``shape`` and charge its element count; returns the count."""
        n = element_count(shape)
        if n > self.left:
            raise PayloadTooLarge(f"shape {_short(shape)} declares {n} elements; the limit is {self.limit} per request")
        self.left -= n
        return n


def element_count(shape: list[int]) -> int:
    """Elements in a tensor of ``shape``; raises ``InvalidInput`` for a bad rank or dims."""
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        rank = len(shape) if isinstance(shape, list) else "?"
        raise InvalidInput(f"invalid shape: rank {rank}; tensors have at most {MAX_RANK} dimensions")
    n = 1
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            raise InvalidInput(f"invalid shape {_short(shape)}: dimensions must be non-negative integers")
        n *= d
    return n


def _short(shape: list[Any]) -> str:
    text = str(shape)
    return text if len(text) <= 80 else text[:77] + "..."


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        out: list[Any] = []
        stack = [iter(data)]
        while stack:
            for item in stack[-1]:
                if isinstance(item, list):
                    stack.append(iter(item))
                    break
                out.append(item)
            else:
                stack.pop()
        return out
    return data


def from_json_data(datatype: str, shape: list[int], data: Any, budget: ElementBudget | None = None) -> np.ndarray:
    """The tensor that JSON ``data`` (flat or nested, row-major) describes."""
    n = budget.take(shape) if budget is not None else element_count(shape)
    if datatype != "BYTES":
        _dtype(datatype)
    flat = _flatten(data)
    if len(flat) != n:
        raise InvalidInput(f"shape {shape} needs {n} elements, the data has {len(flat)}")
    if datatype == "BYTES":
        out = np.empty(n, dtype=object)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                out[i] = v.encode()
            elif isinstance(v, (bytes, bytearray)):
                out[i] = bytes(v)
            else:
                raise InvalidInput("BYTES data must be strings")
        return out.reshape(shape)
    dtype = _dtype(datatype)
    if n == 0:
        return np.empty(shape, dtype=dtype)
    try:  # let NumPy infer first: strings, nulls, objects and floats for integers are refused, not coerced
        inferred = np.asarray(flat)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"the data is not all {datatype} values") from None
    kind = inferred.dtype.kind
    if dtype.kind in "iu" and kind == "f" and not any(isinstance(v, float) for v in flat):
        kind = "u"  # Python ints past int64 beside smaller ones infer as float64; NumPy converts them exactly
    if kind not in _JSON_KINDS[dtype.kind]:
        raise InvalidInput(f"the data is not all {datatype} values")
    if dtype.kind in "iu":
        try:  # from the Python ints: exact, and OverflowError for anything outside the type's range
            return np.asarray(flat, dtype=dtype).reshape(shape)
        except (OverflowError, TypeError, ValueError):
            info = np.iinfo(dtype)
            raise InvalidInput(f"the data has values outside the {datatype} range [{info.min}, {info.max}]") from None
    return inferred.astype(dtype, copy=False).reshape(shape)


def from_raw(datatype: str, shape: list[int], raw: bytes, budget: ElementBudget | None = None) -> np.ndarray:
    """The tensor in binary form (little-endian; BYTES as 4-byte-length-prefixed elements)."""
    n = budget.take(shape) if budget is not None else element_count(shape)
    if datatype == "BYTES":
        return decode_bytes_elements(raw, n).reshape(shape)
    dtype = _dtype(datatype)
    if len(raw) != n * dtype.itemsize:
        raise InvalidInput(f"binary data is {len(raw)} bytes; shape {shape} of {datatype} needs {n * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def decode_bytes_elements(raw: bytes, count: int) -> np.ndarray:
    """Split serialized BYTES (uint32 little-endian length + bytes, repeated) into ``count`` elements.

    Each element takes at least its 4-byte length, so a count the data cannot hold is refused
    before the array is allocated.
    """
    if count * BYTES_PREFIX > len(raw):
        raise InvalidInput(
            f"BYTES data of {len(raw)} bytes cannot hold {count} elements (each takes at least {BYTES_PREFIX})"
        )
    out = np.empty(count, dtype=object)
    pos = 0
    view = memoryview(raw)
    for i in range(count):
        if pos + 4 > len(raw):
            raise InvalidInput(f"BYTES data ends after {i} of {count} elements")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise InvalidInput(f"BYTES element {i} is truncated")
        out[i] = bytes(view[pos : pos + size])
        pos += size
    if pos != len(raw):
        raise InvalidInput(f"{len(raw) - pos} bytes left over after {count} BYTES elements")
    return out


def encode_bytes_elements(values: np.ndarray) -> bytes:
    """Serialize an object array of bytes as BYTES binary data."""
    parts: list[bytes] = []
    for v in values.reshape(-1):
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Binary form of ``array`` as ``datatype``."""
    if datatype == "BYTES":
        return encode_bytes_elements(array)
    return np.ascontiguousarray(array, dtype=_dtype(datatype)).tobytes()


def to_json_data(array: np.ndarray, datatype: str) -> list[Any]:
    """Flat row-major JSON list (BYTES as UTF-8 strings, as Triton answers)."""
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    result: list[Any] = flat.tolist()
    return result


def _dtype(datatype: str) -> np.dtype[Any]:
    try:
        return DATATYPES[datatype]
    except KeyError:
        raise InvalidInput(f"unsupported datatype {datatype!r}; use one of {[*DATATYPES, 'BYTES']}") from None
