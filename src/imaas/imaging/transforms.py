"""Pure geometric and numeric transforms: image in, image (or array) out.

Sizes are ``(height, width)`` like the manifest's ``input.size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

Interpolation = Literal["bilinear", "bicubic", "nearest", "lanczos"]
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize_shorter(img: Image.Image, size: int, interpolation: Interpolation = "bilinear") -> Image.Image:
    """Scale so the shorter side is ``size``, keeping the aspect ratio."""
    w, h = img.size
    if min(w, h) == size:
        return img
    s = size / min(w, h)
    new = (max(1, round(w * s)), max(1, round(h * s)))
    return img.resize(new, _RESAMPLE[interpolation])


def resize_exact(img: Image.Image, size: tuple[int, int], interpolation: Interpolation = "bilinear") -> Image.Image:
    """Stretch to exactly ``size`` = (height, width)."""
    h, w = size
    if img.size == (w, h):
        return img
    return img.resize((w, h), _RESAMPLE[interpolation])


def resize_shorter_center_crop(
    img: Image.Image, resize_to: int, size: tuple[int, int], interpolation: Interpolation = "bilinear"
) -> Image.Image:
    """``resize_shorter`` to ``resize_to`` then ``center_crop`` to ``size``, in one resampling pass.

    Only the source region that survives the crop is resampled (Pillow's ``box``), which
    halves the work for the usual 256 -> 224 crop and samples the same positions.
    """
    w, h = img.size
    s = resize_to / min(w, h)
    rw, rh = max(1, round(w * s)), max(1, round(h * s))
    ch, cw = size
    left, top = (rw - cw) // 2, (rh - ch) // 2
    if left < 0 or top < 0:  # the crop is larger than the resized image: pad like center_crop
        return center_crop(resize_shorter(img, resize_to, interpolation), size)
    sx, sy = w / rw, h / rh
    box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
    return img.resize((cw, ch), _RESAMPLE[interpolation], box=box)


def center_crop(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Cut the central ``size`` = (height, width); pads with black where the image is smaller."""
    h, w = size
    iw, ih = img.size
    if (iw, ih) == (w, h):
        return img
    left = (iw - w) // 2
    top = (ih - h) // 2
    return img.crop((left, top, left + w, top + h))


def letterbox(
    img: Image.Image, size: tuple[int, int], pad_value: int = 114, interpolation: Interpolation = "bilinear"
) -> tuple[Image.Image, float, tuple[int, int]]:
    """Fit inside ``size`` keeping the aspect ratio and pad the rest.

    Returns the padded image, the scale applied and the (left, top) padding, which map
    boxes found on the padded image back to the original.
    """
    h, w = size
    iw, ih = img.size
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    resized = img.resize((nw, nh), _RESAMPLE[interpolation]) if (nw, nh) != (iw, ih) else img
    fill: int | tuple[int, int, int] = pad_value if img.mode == "L" else (pad_value,) * 3
    canvas = Image.new(img.mode, (w, h), fill)
    left, top = (w - nw) // 2, (h - nh) // 2
    canvas.paste(resized, (left, top))
    return canvas, s, (left, top)


def normalize(
    pixels: np.ndarray,
    scale: float,
    mean: Sequence[float],
    std: Sequence[float],
    layout: Literal["NCHW", "NHWC"] = "NHWC",
) -> np.ndarray:
    """``(pixels * scale - mean) / std`` per channel as float32, already in ``layout``.

    ``pixels`` is HxWxC (or HxW) uint8; ``mean``/``std`` have one value or one per channel.
    The constants fold into one multiply-add written straight into a contiguous CxHxW (or
    HxWxC) array, instead of a cast, two arithmetic passes and a transposing copy.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    sd = np.asarray(std, dtype=np.float32)
    a = np.float32(scale) / sd
    b = -np.asarray(mean, dtype=np.float32) / sd
    if layout == "NCHW":
        h, w, c = pixels.shape
        out = np.empty((c, h, w), dtype=np.float32)
        np.multiply(pixels.transpose(2, 0, 1), a.reshape(-1, 1, 1), out=out, casting="unsafe")
        out += b.reshape(-1, 1, 1)
        return out
    nhwc: np.ndarray = np.multiply(pixels, a, dtype=np.float32)
    nhwc += b
    return nhwc


def to_layout(hwc: np.ndarray, layout: Literal["NCHW", "NHWC"]) -> np.ndarray:
    """HxWxC -> CxHxW (``NCHW``) or unchanged (``NHWC``), contiguous, without batch axis."""
    if hwc.ndim == 2:
        hwc = hwc[:, :, None]
    if layout == "NCHW":
        return np.ascontiguousarray(hwc.transpose(2, 0, 1))
    return np.ascontiguousarray(hwc)
