"""From encoded image bytes to the model's input tensor, as the manifest describes, and the
geometry that maps the tensor's pixels back to the photo's.

Example::

    tensor, geometry = prepare_image(jpeg, manifest.input, manifest.preprocess, DecodeLimits())
    boxes = geometry.to_original(boxes_in_tensor_pixels)  # letterbox, crop and DCT scaling undone
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imaas.imaging.decode import DecodeLimits, PixelBudget, decode_sized
from imaas.imaging.transforms import (
    center_crop,
    letterbox,
    normalize,
    resize_exact,
    resize_shorter,
    resize_shorter_center_crop,
    to_layout,
)
from imaas.schemas.manifest import InputSpec, Preprocess

_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


@dataclass(frozen=True)
class Geometry:
    """Where a tensor's pixels lie in the original, upright photo (EXIF orientation applied):
    a tensor point ``(x, y)`` is the photo's ``((x - pad_x) / scale_x, (y - pad_y) / scale_y)``.

    ``width`` and ``height`` are the photo's at full size, even when a JPEG was decoded at a
    reduced DCT scale.
    """

    width: int
    height: int
    scale_x: float = 1.0
    scale_y: float = 1.0
    pad_x: float = 0.0
    pad_y: float = 0.0

    @classmethod
    def identity(cls, height: int, width: int) -> Geometry:
        """The geometry of a tensor sent already pre-processed: its pixels are the image's."""
        return cls(width=width, height=height)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """``[..., 4]`` boxes ``x1, y1, x2, y2`` in tensor pixels -> the photo's pixels, clipped to it."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[..., 0::2] = (boxes[..., 0::2] - self.pad_x) / self.scale_x
        out[..., 1::2] = (boxes[..., 1::2] - self.pad_y) / self.scale_y
        np.clip(out[..., 0::2], 0, self.width, out=out[..., 0::2])
        np.clip(out[..., 1::2], 0, self.height, out=out[..., 1::2])
        return out

    def points_to_original(self, points: np.ndarray) -> np.ndarray:
        """``[..., 2]`` points ``x, y`` in tensor pixels -> the photo's pixels, clipped to it."""
        out = np.empty_like(points, dtype=np.float32)
        out[..., 0] = np.clip((points[..., 0] - self.pad_x) / self.scale_x, 0, self.width)
        out[..., 1] = np.clip((points[..., 1] - self.pad_y) / self.scale_y, 0, self.height)
        return out


def needed_side(spec: InputSpec, pre: Preprocess) -> int | None:
    """The smallest image side the pipeline needs, which bounds JPEG DCT scaling."""
    if spec.size is None or pre.resize == "none":
        return None
    if pre.resize == "shorter":
        return pre.resize_to or max(spec.size)
    return max(spec.size)


def image_to_tensor(
    data: bytes, spec: InputSpec, pre: Preprocess, limits: DecodeLimits, budget: PixelBudget | None = None
) -> np.ndarray:
    """Decode ``data`` and pre-process it into one input tensor (no batch axis); see ``prepare_image``."""
    return prepare_image(data, spec, pre, limits, budget)[0]


def prepare_image(
    data: bytes, spec: InputSpec, pre: Preprocess, limits: DecodeLimits, budget: PixelBudget | None = None
) -> tuple[np.ndarray, Geometry]:
    """Decode ``data`` and pre-process it into one input tensor (no batch axis), with the
    geometry that maps the tensor's pixels to the photo's.

    The manifest must be complete (``size``, ``layout`` and ``dtype`` set), which push
    guarantees by inferring them from the graph. The decoded pixels are charged to ``budget``
    (the request's) before decoding.
    """
    assert spec.size is not None
    assert spec.layout is not None
    assert spec.dtype is not None
    img, (full_w, full_h) = decode_sized(data, limits, min_size=needed_side(spec, pre), color=spec.color, budget=budget)
    iw, ih = img.size
    height, width = size = spec.size
    # (tensor pixels per decoded pixel, x then y) and the tensor position of the decoded origin
    sx, sy, px, py = 1.0, 1.0, 0.0, 0.0
    if pre.resize == "shorter":
        s = (pre.resize_to or max(size)) / min(iw, ih)
        rw, rh = max(1, round(iw * s)), max(1, round(ih * s))
        if pre.crop == "center":
            img = resize_shorter_center_crop(img, pre.resize_to or max(size), size, pre.interpolation)
            sx, sy, px, py = rw / iw, rh / ih, -float((rw - width) // 2), -float((rh - height) // 2)
        else:
            img = resize_exact(
                resize_shorter(img, pre.resize_to or max(size), pre.interpolation), size, pre.interpolation
            )
            sx, sy = width / iw, height / ih
    elif pre.resize == "exact":
        img = resize_exact(img, size, pre.interpolation)
        sx, sy = width / iw, height / ih
    elif pre.resize == "letterbox":
        img, s, (left, top) = letterbox(img, size, pre.pad_value, pre.interpolation)
        nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
        sx, sy, px, py = nw / iw, nh / ih, float(left), float(top)
    else:
        img = center_crop(img, size)
        px, py = -float((iw - width) // 2), -float((ih - height) // 2)
    # decoded pixels per photo pixel (a JPEG decoded at 1/2, 1/4 or 1/8 scale)
    dx, dy = iw / full_w, ih / full_h
    geometry = Geometry(full_w, full_h, sx * dx, sy * dy, px, py)
    pixels = np.asarray(img)
    if spec.color == "BGR":
        pixels = pixels[:, :, ::-1]
    if spec.dtype == "uint8":
        return to_layout(pixels, spec.layout), geometry
    tensor = normalize(pixels, pre.scale, pre.mean, pre.std, spec.layout).astype(_DTYPES[spec.dtype], copy=False)
    return tensor, geometry
