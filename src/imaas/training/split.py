"""A stratified train/validation/test split and the per-channel statistics to normalise with.

The split is deterministic for a seed and independent of the order the images arrive in:
within each class the items are sorted by a content key (the sha256) before a seeded
shuffle, and each class draws its own generator (seeded with the seed and a stable hash of
the label), so adding a class does not reshuffle the others. Every class appears in every
split whose fraction is above zero, which is what per-class metrics need.

Example::

    splits = stratified_split([i.label for i in images], [i.sha256 for i in images], seed=7)
    mean, std = channel_stats(arrays)
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from imaas.errors import InvalidDataset, InvalidField

SPLITS = ("train", "validation", "test")
_CHUNK_PIXELS = 1 << 20  # bounds the int64 temporaries of channel_stats to ~8 MiB per channel


def stratified_split(
    labels: Sequence[str],
    keys: Sequence[str],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> list[str]:
    """``"train"``, ``"validation"`` or ``"test"`` for each item, per class in ``fractions``.

    Each class gets ``round(n * f_val)`` validation and ``round(n * f_test)`` test items, at
    least one each when the fraction is above zero, and the rest (at least one) for training.
    Raises ``InvalidField`` ("split") for bad fractions and ``InvalidDataset`` for a class too
    small to split.

    Example::

        stratified_split(["cat"] * 10 + ["dog"] * 10, [f"{i:02}" for i in range(20)])
    """
    check_fractions(fractions)
    if len(labels) != len(keys):
        raise InvalidField(f"keys: {len(keys)} keys for {len(labels)} labels; give one key per item", field="keys")
    if seed < 0:
        raise InvalidField(f"seed: must be at least 0, got {seed}", field="seed")
    _, f_val, f_test = fractions
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    out = [""] * len(labels)
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda i: keys[i])
        n_val, n_test = _class_counts(label, len(items), f_val, f_test)
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        order = [items[j] for j in rng.permutation(len(items))]
        for rank, i in enumerate(order):
            out[i] = "validation" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return out


def check_fractions(fractions: tuple[float, float, float]) -> None:
    """``InvalidField`` naming ``split`` unless these are three finite fractions >= 0 summing
    to 1 with a train fraction above 0."""
    if len(fractions) != 3:
        raise InvalidField(f"split: give 3 fractions (train, validation, test), got {len(fractions)}", field="split")
    if not all(math.isfinite(f) and f >= 0 for f in fractions):
        raise InvalidField(f"split: every fraction must be a number >= 0, got {fractions}", field="split")
    if fractions[0] <= 0:
        raise InvalidField(f"split: the train fraction must be above 0, got {fractions[0]}", field="split")
    if abs(sum(fractions) - 1.0) > 1e-6:
        total = sum(fractions)
        raise InvalidField(f"split: the fractions must sum to 1, got {fractions} (sum {total:g})", field="split")


def _class_counts(label: str, n: int, f_val: float, f_test: float) -> tuple[int, int]:
    """(validation, test) counts for a class of ``n`` items; training keeps at least one."""
    need = 1 + (f_val > 0) + (f_test > 0)
    if n < need:
        raise InvalidDataset(
            f"class {label!r} has {n} image{'s' if n != 1 else ''}; the split needs at least {need} per class "
            f"(1 train{', 1 validation' if f_val > 0 else ''}{', 1 test' if f_test > 0 else ''})",
            label=label,
            count=n,
            needs=need,
        )
    n_val = max(round(n * f_val), 1) if f_val > 0 else 0
    n_test = max(round(n * f_test), 1) if f_test > 0 else 0
    # rounding up both can leave training empty (n=4 at 10/45/45): give back from the larger one
    while n - n_val - n_test < 1:
        if n_val >= n_test and n_val > (1 if f_val > 0 else 0):
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def channel_stats(images: Iterable[np.ndarray]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std on the 0..1 scale over every pixel of uint8 HWC arrays.

    The sums of x and x² are kept as exact integers (uint8 values cannot overflow int64 within
    a chunk, and Python integers across chunks), so the variance has no cancellation error
    however many pixels there are; images may differ in size, not in channel count.

    Example::

        mean, std = channel_stats(np.asarray(img) for img in pil_images)
    """
    count = 0
    s1: list[int] = []
    s2: list[int] = []
    channels = -1
    for index, arr in enumerate(images):
        if arr.dtype != np.uint8 or arr.ndim != 3:
            raise InvalidDataset(
                f"image {index}: channel_stats takes uint8 (H, W, C) arrays, got {arr.dtype} with shape {arr.shape}"
            )
        if channels < 0:
            channels = arr.shape[2]
            s1, s2 = [0] * channels, [0] * channels
        elif arr.shape[2] != channels:
            raise InvalidDataset(f"image {index}: has {arr.shape[2]} channels, the images before it {channels}")
        flat = arr.reshape(-1, channels)
        for start in range(0, flat.shape[0], _CHUNK_PIXELS):
            chunk = flat[start : start + _CHUNK_PIXELS].astype(np.int64)
            sums = chunk.sum(axis=0)
            squares = (chunk * chunk).sum(axis=0)
            for c in range(channels):
                s1[c] += int(sums[c])
                s2[c] += int(squares[c])
        count += flat.shape[0]
    if count == 0:
        raise InvalidDataset("channel_stats: no pixels (no images, or only empty ones)")
    means = tuple(s / count / 255.0 for s in s1)
    # n² · var = n·Σx² - (Σx)², computed exactly in integers (so never negative) before one division
    stds = tuple(math.sqrt(count * q - s * s) / count / 255.0 for s, q in zip(s1, s2, strict=True))
    return means, stds
