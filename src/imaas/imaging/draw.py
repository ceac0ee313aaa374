"""Drawing results on photos, redacting regions of them, and encoding the photos that
answers carry.

Example::

    drawn = draw_boxes(photo, [((10, 20, 110, 90), "FACE_FEMALE 0.91")])
    hidden = redact(photo, [(10, 20, 110, 90)], "pixelate")
    body = encode(drawn, "JPEG")
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter, ImageFont

ImageFormat = Literal["JPEG", "PNG"]
RedactMethod = Literal["blur", "pixelate"]
REDACT_METHODS: tuple[RedactMethod, ...] = ("blur", "pixelate")
REDACT_PADDING = 0.1
"""Each region grows by this fraction of its size on every side (a detector's box hugs the face)."""
PIXELATE_BLOCKS = 8
"""Blocks across a pixelated region's longer side: too coarse to recognise a face or read text."""
MEDIA_TYPES: dict[ImageFormat, str] = {"JPEG": "image/jpeg", "PNG": "image/png"}
_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))

Box = tuple[float, float, float, float]


def draw_boxes(
    photo: Image.Image, boxes: Sequence[tuple[Box, str]], classes: Sequence[int] | None = None
) -> Image.Image:
    """A copy of ``photo`` (RGB) with each box outlined and captioned, coloured by class."""
    out = photo.convert("RGB").copy()
    pen = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 50)))
    for n, (box, caption) in enumerate(boxes):
        color = _PALETTE[(classes[n] if classes is not None else n) % len(_PALETTE)]
        x1, y1, x2, y2 = box
        pen.rectangle((x1, y1, x2, y2), outline=color, width=width)
        if caption:
            left, top, right, bottom = pen.textbbox((x1, y1), caption, font=font)
            lift = bottom - top + 2 * width
            y = y1 - lift if y1 - lift >= 0 else y1
            pen.rectangle((x1, y, x1 + (right - left) + 2 * width, y + lift), fill=color)
            pen.text((x1 + width, y + width - (top - y1)), caption, fill=(255, 255, 255), font=font)
    return out


def redact(photo: Image.Image, boxes: Sequence[Box], method: RedactMethod) -> Image.Image:
    """A copy of ``photo`` (RGB) with every box (padded by ``REDACT_PADDING``, clipped to the
    photo) blurred or pixelated; the pixels outside the boxes are left as they were.

    ``blur`` is a Gaussian blur whose radius grows with the region (a sixth of its longer
    side), ``pixelate`` averages ``PIXELATE_BLOCKS`` blocks across the region's longer side.
    """
    out = photo.convert("RGB").copy()
    width, height = out.size
    for x1, y1, x2, y2 in boxes:
        pad_x, pad_y = (x2 - x1) * REDACT_PADDING, (y2 - y1) * REDACT_PADDING
        left, top = max(0, math.floor(x1 - pad_x)), max(0, math.floor(y1 - pad_y))
        right, bottom = min(width, math.ceil(x2 + pad_x)), min(height, math.ceil(y2 + pad_y))
        if right - left < 1 or bottom - top < 1:
            continue
        region = out.crop((left, top, right, bottom))
        side = max(right - left, bottom - top)
        if method == "blur":
            region = region.filter(ImageFilter.GaussianBlur(radius=max(3.0, side / 6)))
        else:
            block = max(1, side // PIXELATE_BLOCKS)
            small = (max(1, -(-(right - left) // block)), max(1, -(-(bottom - top) // block)))
            region = region.resize(small, Image.Resampling.BOX).resize(region.size, Image.Resampling.NEAREST)
        out.paste(region, (left, top))
    return out


def encode(photo: Image.Image, fmt: ImageFormat, quality: int = 90) -> bytes:
    """``photo`` as JPEG (quality ``quality``) or PNG bytes, without metadata."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        photo.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        photo.save(buf, "PNG", compress_level=6)
    return buf.getvalue()
