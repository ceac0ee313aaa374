"""Batch augmentations: shapes kept, deterministic per generator, bounded displacement."""

from __future__ import annotations

import math

import pytest
import torch

from imaas.schemas.training import Augment
from imaas.training.augment import augmenter, color_jitter, flip_enabled, random_resized_crop, rotate, shift

EVERYTHING = Augment(random_resized_crop=True, flip=True, rotation_deg=15, color_jitter=0.3, shift_px=3)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("channels", "size"), [(1, (28, 28)), (3, (24, 40))])
def test_shapes_are_kept(channels: int, size: tuple[int, int]) -> None:
    x = torch.rand(6, channels, *size, generator=_gen())
    out = augmenter(EVERYTHING, channels)(x, _gen())
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert float(out.min()) >= 0
    assert float(out.max()) <= 1


def test_same_seed_same_output_other_seed_other_output() -> None:
    x = torch.rand(8, 3, 32, 32, generator=_gen())
    augment = augmenter(EVERYTHING, 3)
    assert torch.equal(augment(x, _gen(5)), augment(x, _gen(5)))
    assert not torch.equal(augment(x, _gen(5)), augment(x, _gen(6)))


def test_nothing_enabled_is_identity() -> None:
    x = torch.rand(4, 1, 20, 20, generator=_gen())
    assert torch.equal(augmenter(Augment(shift_px=0), 1)(x, _gen()), x)


def test_shift_moves_content_by_at_most_shift_px() -> None:
    x = torch.zeros(64, 1, 24, 24)
    x[:, 0, 10, 12] = 1.0
    out = shift(x, 2, _gen())
    offsets = set()
    for image in out[:, 0]:
        found = (image == 1.0).nonzero().tolist()
        assert len(found) == 1
        assert float(image.sum()) == 1.0
        (r, c), = found  # fmt: skip
        assert abs(r - 10) <= 2
        assert abs(c - 12) <= 2
        offsets.add((r - 10, c - 12))
    assert len(offsets) > 10  # it does move, in both axes


def test_flip_is_automatic_off_for_one_channel_on_for_three() -> None:
    assert not flip_enabled(Augment(), 1)
    assert flip_enabled(Augment(), 3)
    assert flip_enabled(Augment(flip=True), 1)
    x = torch.rand(16, 1, 20, 20, generator=_gen())
    assert torch.equal(augmenter(Augment(shift_px=0), 1)(x, _gen()), x)
    rgb = torch.rand(16, 3, 20, 20, generator=_gen())
    out = augmenter(Augment(shift_px=0), 3)(rgb, _gen())
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, rgb, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, rgb, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped)
    assert any(kept)


def _orientation_deg(image: torch.Tensor) -> float:
    """Angle of the principal axis of the pixel mass (second moments), in degrees."""
    h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    m = image.double() / image.double().sum()
    cx, cy = float((m * xs).sum()), float((m * ys).sum())
    cxx = float((m * (xs - cx) ** 2).sum())
    cyy = float((m * (ys - cy) ** 2).sum())
    cxy = float((m * (xs - cx) * (ys - cy)).sum())
    return math.degrees(0.5 * math.atan2(2 * cxy, cxx - cyy))


@pytest.mark.parametrize(("h", "w"), [(33, 33), (25, 49)])
def test_rotation_turns_a_line_by_at_most_the_limit(h: int, w: int) -> None:
    x = torch.zeros(32, 1, h, w)
    x[:, 0, h // 2, w // 2 - 8 : w // 2 + 9] = 1.0  # a horizontal line through the centre
    out = rotate(x, 20.0, _gen())
    angles = [_orientation_deg(image) for image in out[:, 0]]
    assert max(abs(a) for a in angles) <= 20.0 + 1.5  # aspect-corrected: a rotation, not a shear
    assert max(abs(a) for a in angles) > 10.0
    assert float(out.sum(dim=(1, 2, 3)).min()) == pytest.approx(17.0, rel=0.1)  # nothing falls off


def test_random_resized_crop_keeps_a_part_of_the_image() -> None:
    ramp = torch.linspace(0, 1, 40).expand(8, 1, 40, 40).contiguous()  # value = column / 39
    out = random_resized_crop(ramp, (0.25, 0.25), _gen())
    assert out.shape == ramp.shape
    # a box of a quarter of the area with aspect <= 4/3 spans at most sqrt(0.25 * 4/3) = 58% of the width
    spans = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    assert float(spans.max()) <= 0.6
    assert float(spans.min()) >= 0.35


def test_color_jitter_changes_within_range() -> None:
    x = torch.rand(8, 3, 16, 16, generator=_gen())
    out = color_jitter(x, 0.5, _gen())
    assert float(out.min()) >= 0
    assert float(out.max()) <= 1
    assert not torch.allclose(out, x)
    gray = torch.rand(8, 1, 16, 16, generator=_gen())
    assert color_jitter(gray, 0.5, _gen()).shape == gray.shape
    assert torch.equal(color_jitter(x, 0.0, _gen()), x)
