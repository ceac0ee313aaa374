"""OIP tensors: declared shapes are bounded before anything is allocated for them."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc

import numpy as np
import pytest

from imaas.errors import InvalidInput, PayloadTooLarge
from imaas.services.tensors import MAX_RANK, ElementBudget, from_json_data, from_raw, to_raw


def peak_bytes(fn: object) -> int:
    """Peak bytes Python allocated while ``fn`` ran (it may raise)."""
    tracemalloc.start()
    with contextlib.suppress(InvalidInput, PayloadTooLarge):
        fn()  # type: ignore[operator]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_a_huge_bytes_shape_with_a_kilobyte_of_data_allocates_nothing_for_it() -> None:
    raw = struct.pack("<I", 1000) + b"x" * 1000
    with pytest.raises(InvalidInput, match="cannot hold 2000000000 elements"):
        from_raw("BYTES", [2_000_000_000], raw)
    assert peak_bytes(lambda: from_raw("BYTES", [2_000_000_000], raw)) < 100_000  # was a 16 GB object array


def test_the_element_budget_is_shared_by_a_requests_inputs() -> None:
    budget = ElementBudget(100)
    assert budget.take([2, 30]) == 60
    with pytest.raises(PayloadTooLarge, match="declares 60 elements; the limit is 100 per request"):
        budget.take([60])
    with pytest.raises(PayloadTooLarge):
        from_json_data("FP32", [10**12], [0.0], ElementBudget(1000))


@pytest.mark.parametrize(
    "shape", [[1] * (MAX_RANK + 1), [1] * 65, [-1, 3], [2.0], [True], "3", [[3]]], ids=lambda s: str(s)[:20]
)
def test_bad_shapes_are_invalid_input(shape: object) -> None:
    with pytest.raises(InvalidInput):
        from_json_data("FP32", shape, [0.0])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        from_raw("FP32", shape, b"\0\0\0\0")  # type: ignore[arg-type]


def test_the_highest_rank_still_works() -> None:
    shape = [1] * MAX_RANK
    np.testing.assert_array_equal(from_json_data("INT32", shape, [7]).reshape(-1), [7])


def test_round_trip_and_length_checks() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(from_raw("FP32", [2, 3], to_raw(array, "FP32")), array)
    with pytest.raises(InvalidInput, match="needs 24"):
        from_raw("FP32", [2, 3], to_raw(array, "FP32")[:-1])
    with pytest.raises(InvalidInput, match="unsupported datatype"):
        from_json_data("FP128", [1], [1.0])


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("UINT8", [1] * 64 + [1.9]),  # a float anywhere, not only in the first values
        ("INT32", ["1"]),
        ("FP32", ["1.5"]),
        ("FP32", [None]),
        ("UINT8", [300]),
        ("UINT8", [-1]),
        ("INT64", [2**63]),
        ("BOOL", [1]),
        ("FP32", [{"a": 1}]),
    ],
)
def test_json_data_is_taken_as_sent_or_refused(datatype: str, data: list[object]) -> None:
    with pytest.raises(InvalidInput):
        from_json_data(datatype, [len(data)], data)


def test_json_integers_are_exact_across_the_whole_range() -> None:
    values = [0, 2**64 - 1, 2**63]
    np.testing.assert_array_equal(from_json_data("UINT64", [3], values), np.array(values, dtype=np.uint64))
    np.testing.assert_array_equal(from_json_data("FP32", [2], [1, 2.5]), [1.0, 2.5])
    assert from_json_data("INT8", [0], []).shape == (0,)
