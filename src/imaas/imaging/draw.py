"""Drawing results on photos, and encoding the photos that answers carry.

Example::

    drawn = draw_boxes(photo, [((10, 20, 110, 90), "FACE_FEMALE 0.91")])
    body = encode(drawn, "JPEG")
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

ImageFormat = Literal["JPEG", "PNG"]
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


def encode(photo: Image.Image, fmt: ImageFormat, quality: int = 90) -> bytes:
    """``photo`` as JPEG (quality ``quality``) or PNG bytes, without metadata."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        photo.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        photo.save(buf, "PNG", compress_level=6)
    return buf.getvalue()
