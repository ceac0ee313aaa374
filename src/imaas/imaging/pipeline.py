"""From encoded image bytes to the model's input tensor, as the manifest describes."""

from __future__ import annotations

import numpy as np

from imaas.imaging.decode import DecodeLimits, PixelBudget, decode_image
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
    """Decode ``data`` and pre-process it into one input tensor (no batch axis).

    The manifest must be complete (``size``, ``layout`` and ``dtype`` set), which push
    guarantees by inferring them from the graph. The decoded pixels are charged to ``budget``
    (the request's) before decoding.
    """
    assert spec.size is not None
    assert spec.layout is not None
    assert spec.dtype is not None
    img = decode_image(data, limits, min_size=needed_side(spec, pre), color=spec.color, budget=budget)
    size = spec.size
    if pre.resize == "shorter" and pre.crop == "center":
        img = resize_shorter_center_crop(img, pre.resize_to or max(size), size, pre.interpolation)
    elif pre.resize == "shorter":
        img = resize_exact(resize_shorter(img, pre.resize_to or max(size), pre.interpolation), size, pre.interpolation)
    elif pre.resize == "exact":
        img = resize_exact(img, size, pre.interpolation)
    elif pre.resize == "letterbox":
        img, _, _ = letterbox(img, size, pre.pad_value, pre.interpolation)
    else:
        img = center_crop(img, size)
    pixels = np.asarray(img)
    if spec.color == "BGR":
        pixels = pixels[:, :, ::-1]
    if spec.dtype == "uint8":
        return to_layout(pixels, spec.layout)
    return normalize(pixels, pre.scale, pre.mean, pre.std, spec.layout).astype(_DTYPES[spec.dtype], copy=False)
