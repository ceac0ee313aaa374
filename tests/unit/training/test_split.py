"""The stratified split (counts, determinism, order independence) and channel statistics."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from imaas.errors import InvalidDataset, InvalidField
from imaas.training.split import channel_stats, stratified_split


def _items(sizes: dict[str, int]) -> tuple[list[str], list[str]]:
    labels = [label for label, n in sizes.items() for _ in range(n)]
    keys = [hashlib.sha256(f"{label}-{i}".encode()).hexdigest() for i, label in enumerate(labels)]
    return labels, keys


def _counts(labels: list[str], splits: list[str]) -> dict[str, tuple[int, int, int]]:
    c = Counter(zip(labels, splits, strict=True))
    return {label: (c[label, "train"], c[label, "validation"], c[label, "test"]) for label in sorted(set(labels))}


def test_counts_per_class_follow_the_rounding() -> None:
    labels, keys = _items({"a": 10, "b": 3, "c": 57, "d": 14})
    # hand-computed (train, validation, test): 10 -> 1/1; 3 -> 0.3 rounds to 0, at least 1 each;
    # 57 -> 5.7 rounds to 6; 14 -> 1.4 rounds to 1
    assert _counts(labels, stratified_split(labels, keys)) == {
        "a": (8, 1, 1), "b": (1, 1, 1), "c": (45, 6, 6), "d": (12, 1, 1),
    }
    # 20 at 70/15/15 -> 3 and 3; 4 at 10/45/45 -> 2 and 2 would leave no training item
    labels, keys = _items({"a": 20, "b": 4})
    counts = _counts(labels, stratified_split(labels, keys, (0.7, 0.15, 0.15)))
    assert counts["a"] == (14, 3, 3)
    got = _counts(labels, stratified_split(labels, keys, (0.1, 0.45, 0.45)))["b"]
    assert got[0] == 1
    assert min(got[1:]) >= 1
    assert sum(got) == 4


def test_zero_fraction_gives_no_items_and_needs_fewer() -> None:
    labels, keys = _items({"a": 2, "b": 30})
    assert _counts(labels, stratified_split(labels, keys, (0.9, 0.1, 0.0))) == {"a": (1, 1, 0), "b": (27, 3, 0)}


def test_same_split_whatever_the_input_order() -> None:
    labels, keys = _items({"cat": 40, "dog": 25, "owl": 7})
    by_key = dict(zip(keys, stratified_split(labels, keys, seed=5), strict=True))
    order = np.random.default_rng(1).permutation(len(labels))
    shuffled_labels, shuffled_keys = [labels[i] for i in order], [keys[i] for i in order]
    shuffled = stratified_split(shuffled_labels, shuffled_keys, seed=5)
    assert dict(zip(shuffled_keys, shuffled, strict=True)) == by_key


def test_different_seeds_give_different_splits() -> None:
    labels, keys = _items({"cat": 100, "dog": 100})
    a, b = stratified_split(labels, keys, seed=0), stratified_split(labels, keys, seed=1)
    assert a != b
    assert _counts(labels, a) == _counts(labels, b)  # same sizes, different members
    assert stratified_split(labels, keys, seed=0) == a


def test_every_class_is_in_every_split() -> None:
    sizes = {f"class{i}": n for i, n in enumerate([3, 4, 5, 9, 11, 30, 200])}
    labels, keys = _items(sizes)
    splits = stratified_split(labels, keys)
    for split in ("train", "validation", "test"):
        assert {lab for lab, s in zip(labels, splits, strict=True) if s == split} == set(sizes)


def test_too_small_class_is_refused_naming_it() -> None:
    labels, keys = _items({"cat": 10, "dog": 2})
    with pytest.raises(InvalidDataset) as err:
        stratified_split(labels, keys)
    assert "'dog' has 2 images" in err.value.detail
    assert "at least 3" in err.value.detail
    assert (err.value.extra["count"], err.value.extra["needs"]) == (2, 3)


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (1.1, -0.05, -0.05), (0.0, 0.5, 0.5), (0.8, 0.1, float("nan"))])
def test_bad_fractions_name_the_split_field(fractions: tuple[float, float, float]) -> None:
    labels, keys = _items({"a": 10, "b": 10})
    with pytest.raises(InvalidField) as err:
        stratified_split(labels, keys, fractions)
    assert err.value.detail.startswith("split:")
    assert err.value.extra["field"] == "split"


def test_fractions_within_tolerance_are_accepted() -> None:
    labels, keys = _items({"a": 10, "b": 10})
    assert len(stratified_split(labels, keys, (0.8, 0.1, 0.1000004))) == 20


def test_channel_stats_equals_numpy_over_the_concatenated_pixels() -> None:
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (17, 23, 3), dtype=np.uint8),
        rng.integers(200, 256, (64, 5, 3), dtype=np.uint8),  # a bright, low-variance one
        rng.integers(0, 30, (1100, 1000, 3), dtype=np.uint8),  # more pixels than one internal chunk
        np.full((3, 3, 3), 255, dtype=np.uint8),
    ]
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64) / 255.0
    mean, std = channel_stats(iter(images))
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=0, atol=1e-9)
    assert len(mean) == len(std) == 3


def test_channel_stats_of_one_gray_channel() -> None:
    image = np.array([[[0], [255]], [[0], [255]]], dtype=np.uint8)
    assert channel_stats([image]) == ((0.5,), (0.5,))


def test_channel_stats_refuses_empty_and_mixed_input() -> None:
    with pytest.raises(InvalidDataset):
        channel_stats([])
    with pytest.raises(InvalidDataset, match="image 1"):
        channel_stats([np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 1), np.uint8)])
    with pytest.raises(InvalidDataset, match="uint8"):
        channel_stats([np.zeros((2, 2, 3), np.float32)])
