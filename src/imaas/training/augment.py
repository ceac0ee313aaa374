"""Random augmentations of training batches, deterministic given a ``torch.Generator``.

Every function takes a float tensor N x C x H x W on the **0..1 pixel scale** (``x / 255``,
before the mean/std normalisation) and returns one of the same shape: padding, rotation
and crops fill with 0 (black, the background of digits), colour jitter clips to 0..1.
Each image draws its own random parameters from the generator it is handed, so a run
with the same seed sees the same batches (and a resumed run continues the sequence from
the generator state saved in the checkpoint).

Example::

    augment = augmenter(Augment(shift_px=2, rotation_deg=10), channels=1)
    batch = augment(batch, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from imaas.schemas.training import Augment

if TYPE_CHECKING:
    import torch

Augmentation = Callable[["torch.Tensor", "torch.Generator"], "torch.Tensor"]

_ASPECT = (3 / 4, 4 / 3)  # random_resized_crop's aspect-ratio range, as in torchvision
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, what Pillow's convert("L") uses


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    import torch

    return low + (high - low) * torch.rand(n, generator=gen)


def shift(x: torch.Tensor, max_px: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random whole number of pixels in -max_px..max_px on each axis
    (zero padding, then a random crop back to H x W)."""
    import torch
    from torch.nn import functional

    if max_px <= 0:
        return x
    n, c, h, w = x.shape
    padded = functional.pad(x, (max_px, max_px, max_px, max_px))
    dy = torch.randint(-max_px, max_px + 1, (n,), generator=gen)
    dx = torch.randint(-max_px, max_px + 1, (n,), generator=gen)
    # content moves by (dy, dx): output row r reads padded row r + max_px - dy
    rows = torch.arange(h)[None, :] + max_px - dy[:, None]  # N x H
    cols = torch.arange(w)[None, :] + max_px - dx[:, None]  # N x W
    batch = torch.arange(n)[:, None, None, None]
    channel = torch.arange(c)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    import torch

    mask = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def rotate(x: torch.Tensor, max_deg: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate each image about its centre by a random angle in -max_deg..max_deg (bilinear)."""
    import torch
    from torch.nn import functional

    if max_deg <= 0:
        return x
    n, _, h, w = x.shape
    angle = _uniform(n, -max_deg, max_deg, gen) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(n)
    # affine_grid works in coordinates normalised per axis; the aspect factors keep a
    # rotation of a non-square image a rotation in pixels, not a shear
    theta = torch.stack(
        [torch.stack([cos, -sin * (h / w), zero], 1), torch.stack([sin * (w / h), cos, zero], 1)], 1
    ).to(x.dtype)
    grid = functional.affine_grid(theta, list(x.shape), align_corners=False)
    return functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Crop from each image a random box of area fraction in ``scale`` (aspect ratio in 3/4..4/3)
    at a random place, and resize it back to H x W (bilinear)."""
    import torch
    from torch.nn import functional

    n, _, h, w = x.shape
    area = _uniform(n, scale[0], scale[1], gen)
    log_ratio = _uniform(n, math.log(_ASPECT[0]), math.log(_ASPECT[1]), gen)
    ratio = torch.exp(log_ratio)
    box_h = torch.clamp(torch.round(h * torch.sqrt(area / ratio)), 1, h).long()
    box_w = torch.clamp(torch.round(w * torch.sqrt(area * ratio)), 1, w).long()
    top_u = torch.rand(n, generator=gen)
    left_u = torch.rand(n, generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        bh, bw = int(box_h[i]), int(box_w[i])
        top = int(top_u[i] * (h - bh + 1))
        left = int(left_u[i] * (w - bw + 1))
        crop = x[i : i + 1, :, top : top + bh, left : left + bw]
        out[i : i + 1] = functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
    return out


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Scale brightness, contrast and (3 channels) saturation of each image by factors drawn
    from 1 ± ``strength``; 1-channel images get brightness and contrast. Clipped to 0..1."""
    import torch

    if strength <= 0:
        return x
    n, c = x.shape[:2]

    def factor() -> torch.Tensor:
        return _uniform(n, 1 - strength, 1 + strength, gen)[:, None, None, None].to(x.dtype)

    def gray(t: torch.Tensor) -> torch.Tensor:
        if c != 3:
            return t.mean(1, keepdim=True)
        weights = torch.tensor(_LUMA, dtype=t.dtype)[None, :, None, None]
        return (t * weights).sum(1, keepdim=True)

    out = (x * factor()).clamp(0, 1)
    mean = gray(out).mean((2, 3), keepdim=True)
    out = ((out - mean) * factor() + mean).clamp(0, 1)
    if c == 3:
        luma = gray(out)
        out = ((out - luma) * factor() + luma).clamp(0, 1)
    return out


def flip_enabled(aug: Augment, channels: int) -> bool:
    """Whether random flips apply: ``aug.flip``, or when it is None, on for 3-channel photos
    and off for 1-channel inputs (a mirrored digit is another symbol or none)."""
    return aug.flip if aug.flip is not None else channels != 1


def augmenter(aug: Augment, channels: int) -> Augmentation:
    """The batch augmentation ``aug`` describes, for images with ``channels`` channels.

    Applied in this order: random resized crop, flip, rotation, shift, colour jitter. With
    nothing enabled it returns its input unchanged.
    """
    steps: list[Augmentation] = []
    if aug.random_resized_crop:
        steps.append(lambda x, g: random_resized_crop(x, aug.crop_scale, g))
    if flip_enabled(aug, channels):
        steps.append(flip)
    if aug.rotation_deg > 0:
        steps.append(lambda x, g: rotate(x, aug.rotation_deg, g))
    if aug.shift_px > 0:
        steps.append(lambda x, g: shift(x, aug.shift_px, g))
    if aug.color_jitter > 0:
        steps.append(lambda x, g: color_jitter(x, aug.color_jitter, g))

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for step in steps:
            x = step(x, gen)
        return x

    return apply
