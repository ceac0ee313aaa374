"""Safe image decoding: limits checked before pixels are decoded, EXIF honoured.

Pillow reads only the header in ``Image.open``; the size is checked against the limits
before ``load()`` so a 30000x30000 PNG bomb costs microseconds, not gigabytes, and is
refused with this project's limit and wording (Pillow's own guard, at 179 million pixels,
is switched off so that ours decides). JPEGs are decoded straight to the smallest DCT scale
(1/2, 1/4, 1/8) that still covers the size the model needs (Pillow's draft mode over
libjpeg-turbo), which is most of a photo's decode cost.

Formats that cannot be decoded reduced (PNG, WebP, BMP, GIF, TIFF) are refused when their
full size is more than ``max_downscale`` times the pixels the model reads (a 7000x7000 PNG
for a 224x224 model would be decoded whole only to be thrown away), unless it is small
anyway (``DOWNSCALE_FREE_PIXELS``). What a request's images cost to decode in all is bounded
by a ``PixelBudget``, in pixels of a full decode (``decode_cost``: a JPEG decoded reduced
still costs an eighth of its size, a progressive one all of it).

Example::

    img = decode_image(jpeg_bytes, DecodeLimits(), min_size=256, color="RGB")
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from imaas.errors import ImageTooLarge, ImageTooSmall, InvalidImage

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_270],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}
Color = Literal["RGB", "BGR", "L"]
DOWNSCALE_FREE_PIXELS = 4_000_000  # decodes in ~20 ms whatever the model needs


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds an image must satisfy before it is decoded."""

    max_pixels: int = 50_000_000
    max_side: int = 20_000
    min_side: int = 8
    max_request_pixels: int = 100_000_000
    max_downscale: float = 400.0


class PixelBudget:
    """The pixels one request's images may decode in all; charged before each decode.

    Shared by the worker threads that decode a request's images, so it is locked.

    Example::

        budget = PixelBudget(100_000_000)
        budget.charge(4000 * 3000)  # raises ImageTooLarge once the request's total passes the limit
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, pixels: int) -> None:
        """Reserve ``pixels``; raises ``ImageTooLarge`` (and reserves nothing) past the limit."""
        with self._lock:
            if self.used + pixels > self.limit:
                raise ImageTooLarge(
                    f"the request's images decode to more than {self.limit} pixels together "
                    f"({self.used} so far, {pixels} more for this one); send fewer or smaller images"
                )
            self.used += pixels


def _lift_pillow_guard() -> None:
    """Switch Pillow's process-wide bomb guard off: ``open_checked`` applies the configured
    limits, with this project's messages, before anything is decoded."""
    if Image.MAX_IMAGE_PIXELS is not None:
        Image.MAX_IMAGE_PIXELS = None


def open_checked(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Open ``data`` lazily (header only) and enforce the limits.

    Raises ``InvalidImage`` for empty or unrecognised bytes, ``ImageTooLarge`` and
    ``ImageTooSmall`` for sizes outside the limits.
    """
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    _lift_pillow_guard()
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Exception as exc:  # Pillow raises many types for hostile headers
        raise InvalidImage(
            f"not a decodable image ({type(exc).__name__}); supported: JPEG, PNG, WebP, BMP, GIF, TIFF"
        ) from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InvalidImage(f"image has an empty dimension ({w}x{h})")
    if w * h > limits.max_pixels or max(w, h) > limits.max_side:
        raise ImageTooLarge(
            f"image is {w}x{h} ({w * h} pixels); the limit is {limits.max_pixels} pixels "
            f"and {limits.max_side} per side",
            width=w,
            height=h,
        )
    if min(w, h) < limits.min_side:
        raise ImageTooSmall(f"image is {w}x{h}; each side must be at least {limits.min_side} pixels")
    return img


def decode_image(
    data: bytes,
    limits: DecodeLimits,
    min_size: int | None = None,
    color: Color = "RGB",
    budget: PixelBudget | None = None,
) -> Image.Image:
    """Decode ``data`` to an upright image in ``color`` (``BGR`` decodes as ``RGB``).

    ``min_size`` is the smallest side the caller needs; a JPEG is DCT-scaled down as far as
    it can be while both sides stay at least that large, and another format is refused when
    it is more than ``limits.max_downscale`` times larger than that. The pixels actually
    decoded are charged to ``budget`` first.
    """
    return decode_sized(data, limits, min_size, color, budget)[0]


def decode_sized(
    data: bytes,
    limits: DecodeLimits,
    min_size: int | None = None,
    color: Color = "RGB",
    budget: PixelBudget | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """``decode_image``, and the (width, height) of the upright image at full size: a JPEG
    decoded at reduced scale is smaller than the photo, and boxes are given in the photo's pixels."""
    img = open_checked(data, limits)
    orientation = _orientation(img)
    full_w, full_h = img.size
    upright = (full_h, full_w) if orientation in (5, 6, 7, 8) else (full_w, full_h)
    full = img.size[0] * img.size[1]
    if img.format == "JPEG" and min_size is not None:
        img.draft("L" if color == "L" else "RGB", (min_size, min_size))
    elif min_size is not None:
        _check_downscale(img, min_size, limits)
    if budget is not None:
        budget.charge(decode_cost(img, full))
    try:
        img.load()
    except Exception as exc:
        raise InvalidImage(f"the image data is truncated or corrupt ({exc})") from None
    if orientation in _TRANSPOSE:
        for op in _TRANSPOSE[orientation]:
            img = img.transpose(op)
    return to_color(img, "L" if color == "L" else "RGB"), upright


def decode_cost(img: Image.Image, full_pixels: int) -> int:
    """What decoding ``img`` costs, in pixels of a full decode, for the request's budget.

    A JPEG decoded at reduced scale still entropy-decodes every coefficient: a baseline one
    costs at least an eighth of its full size (31 ms for 7000x7000 at 1/8 scale here), a
    progressive one about its full size (257 ms), however small the output. Other formats
    are decoded whole.
    """
    decoded = img.size[0] * img.size[1]
    if img.format != "JPEG":
        return decoded
    if img.info.get("progressive") or img.info.get("progression"):
        return max(decoded, full_pixels)
    return max(decoded, full_pixels // 8)


def _check_downscale(img: Image.Image, min_size: int, limits: DecodeLimits) -> None:
    """Refuse a full decode the model would mostly throw away (formats without reduced decoding)."""
    w, h = img.size
    pixels = w * h
    needed = min_size * min_size
    if pixels > DOWNSCALE_FREE_PIXELS and pixels > limits.max_downscale * needed:
        raise ImageTooLarge(
            f"a {w}x{h} {img.format} image is {pixels / needed:.0f} times the pixels this model reads "
            f"({min_size}x{min_size}); the limit is {limits.max_downscale:g} times for formats that cannot be "
            "decoded reduced: resize it first, or send it as JPEG",
            width=w,
            height=h,
        )


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not reject an otherwise fine photo
        return 1


def to_color(img: Image.Image, color: Literal["RGB", "L"]) -> Image.Image:
    """Convert any Pillow mode to ``RGB`` or ``L``.

    High-bit-depth greyscale (I;16, I, F) is rescaled to 8 bits instead of clipped;
    transparency is composited on white, so a transparent PNG logo does not turn black.
    """
    mode = img.mode
    if mode == color:
        return img
    if mode.startswith("I") or mode == "F":
        img = _to_8bit(img)
    elif mode == "1":
        img = img.convert("L")
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == color else img.convert(color)


def _to_8bit(img: Image.Image) -> Image.Image:
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf from a float TIFF are replaced below
        arr = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():  # a float TIFF may hold NaN or infinities: they become black, not undefined
        arr = np.where(finite, arr, 0.0)
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    else:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            with np.errstate(over="ignore"):  # a range wider than float64 can scale becomes inf, then 255
                arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
