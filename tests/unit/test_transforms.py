"""Pure transforms and the whole pre-processing pipeline."""

from __future__ import annotations

import numpy as np
from PIL import Image

from imaas.imaging.decode import DecodeLimits
from imaas.imaging.pipeline import image_to_tensor, needed_side
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
from tests.factories import solid


def test_resize_shorter_keeps_aspect() -> None:
    assert resize_shorter(Image.new("RGB", (400, 200)), 100).size == (200, 100)
    assert resize_shorter(Image.new("RGB", (200, 400)), 100).size == (100, 200)


def test_resize_exact_and_center_crop() -> None:
    img = Image.new("RGB", (300, 200))
    assert resize_exact(img, (50, 60)).size == (60, 50)
    img.paste((255, 0, 0), (140, 90, 160, 110))
    crop = center_crop(img, (20, 20))
    assert crop.size == (20, 20)
    assert np.asarray(crop)[..., 0].min() == 255


def test_letterbox_pads_and_reports_geometry() -> None:
    out, scale, (left, top) = letterbox(Image.new("RGB", (200, 100), (255, 255, 255)), (100, 100), pad_value=0)
    assert out.size == (100, 100)
    assert scale == 0.5
    assert (left, top) == (0, 25)
    arr = np.asarray(out)
    assert arr[0].max() == 0
    assert arr[50].min() == 255


def test_normalize_matches_the_formula_in_both_layouts() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    want = (pixels / 255 - np.array(mean)) / np.array(std)
    nhwc = normalize(pixels, 1 / 255, mean, std, "NHWC")
    nchw = normalize(pixels, 1 / 255, mean, std, "NCHW")
    assert nhwc.dtype == nchw.dtype == np.float32
    np.testing.assert_allclose(nhwc, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nchw, want.transpose(2, 0, 1), rtol=1e-5, atol=1e-6)
    assert nchw.flags.c_contiguous
    grey = normalize(pixels[:, :, 0], 1 / 255, (0.5,), (0.5,), "NCHW")
    assert grey.shape == (1, 5, 7)


def test_one_pass_resize_crop_matches_resize_then_crop() -> None:
    rng = np.random.default_rng(1)
    smooth = Image.fromarray(rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)).resize((451, 300), Image.BICUBIC)
    fused = np.asarray(resize_shorter_center_crop(smooth, 256, (224, 224)), dtype=np.float32)
    two_step = np.asarray(center_crop(resize_shorter(smooth, 256), (224, 224)), dtype=np.float32)
    assert fused.shape == (224, 224, 3)
    assert np.abs(fused - two_step).mean() < 1.0  # same sampling grid; only edge filtering differs
    small = resize_shorter_center_crop(Image.new("RGB", (100, 50)), 100, (224, 224))
    assert small.size == (224, 224)


def test_layouts() -> None:
    hwc = np.zeros((4, 5, 3), dtype=np.float32)
    assert to_layout(hwc, "NCHW").shape == (3, 4, 5)
    assert to_layout(hwc, "NHWC").shape == (4, 5, 3)
    assert to_layout(np.zeros((4, 5)), "NCHW").shape == (1, 4, 5)


def test_pipeline_produces_the_model_tensor() -> None:
    spec = InputSpec(layout="NCHW", size=(224, 224), dtype="float32")
    pre = Preprocess(resize_to=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tensor = image_to_tensor(solid((255, 0, 0), size=(640, 480), fmt="JPEG"), spec, pre, DecodeLimits())
    assert tensor.shape == (3, 224, 224)
    assert tensor.dtype == np.float32
    assert tensor[0].mean() > 0.9
    assert tensor[2].mean() < -0.9
    assert needed_side(spec, pre) == 256


def test_pipeline_bgr_uint8_nhwc() -> None:
    spec = InputSpec(layout="NHWC", size=(32, 32), dtype="uint8", color="BGR")
    tensor = image_to_tensor(solid((255, 0, 0)), spec, Preprocess(resize="exact"), DecodeLimits())
    assert tensor.shape == (32, 32, 3)
    assert tensor.dtype == np.uint8
    assert tensor[..., 2].min() == 255
    assert tensor[..., 0].max() == 0
