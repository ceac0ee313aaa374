"""Safe decoding: formats, modes, EXIF, limits, hostile bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaas.errors import ImageTooLarge, ImageTooSmall, InvalidImage
from imaas.imaging.decode import DecodeLimits, PixelBudget, decode_image, open_checked, to_color
from tests.factories import png_header_only, solid

LIMITS = DecodeLimits(max_pixels=10_000_000, max_side=10_000, min_side=8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_every_supported_format_decodes_to_rgb(fmt: str) -> None:
    img = decode_image(solid((200, 30, 30), fmt=fmt), LIMITS)
    assert img.mode == "RGB"
    assert img.size == (64, 48)
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 150
    assert g < 80
    assert b < 80


def test_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    arr = np.asarray(decode_image(buf.getvalue(), LIMITS))
    assert arr[..., 0].mean() > 200
    assert arr[..., 2].mean() < 50


def _encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "I", "F"])
def test_every_mode_converts(mode: str) -> None:
    base = Image.new("RGB", (20, 20), (120, 120, 120))
    img = base.convert(mode) if mode not in ("I;16", "I", "F") else Image.new(mode, (20, 20), 30000)
    out = to_color(img, "RGB")
    assert out.mode == "RGB"
    assert out.size == (20, 20)


def test_sixteen_bit_grey_is_rescaled_not_clipped() -> None:
    img = Image.new("I;16", (10, 10), 32768)
    value = np.asarray(to_color(img, "L")).mean()
    assert 120 < value < 135  # half of full scale, not 255


def test_transparency_is_composited_on_white() -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert np.asarray(to_color(img, "RGB")).min() == 255


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(img, "JPEG", exif=exif.tobytes(), quality=95)
    out = decode_image(data, LIMITS)
    assert out.size == (20, 40)
    arr = np.asarray(out.convert("L"))
    assert arr[:20].mean() > 200
    assert arr[20:].mean() < 60


def test_jpeg_is_dct_scaled_to_what_the_model_needs() -> None:
    data = solid((10, 200, 10), size=(2000, 1600), fmt="JPEG")
    out = decode_image(data, LIMITS, min_size=256)
    assert min(out.size) >= 256
    assert out.size[0] <= 500  # decoded at 1/4 scale, not full size


def test_empty_bytes() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"", LIMITS)


def test_non_image_bytes() -> None:
    with pytest.raises(InvalidImage):
        decode_image(b"this is not an image at all" * 10, LIMITS)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(fmt: str) -> None:
    rng = np.random.default_rng(1)
    data = _encode(Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)), fmt)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], LIMITS)


def test_bomb_is_refused_before_decoding_with_our_limit_and_wording() -> None:
    with pytest.raises(ImageTooLarge) as far_over:  # over Pillow's own guard (179 MP) too
        open_checked(png_header_only(30000, 30000), LIMITS)
    assert str(far_over.value) == (
        "image is 30000x30000 (900000000 pixels); the limit is 10000000 pixels and 10000 per side"
    )
    assert (far_over.value.extra["width"], far_over.value.extra["height"]) == (30000, 30000)
    with pytest.raises(ImageTooLarge) as info:
        open_checked(png_header_only(5000, 5000), LIMITS)  # under Pillow's guard, over ours
    assert info.value.extra["width"] == 5000


def test_a_configured_limit_above_pillows_guard_is_honoured() -> None:
    roomy = DecodeLimits(max_pixels=400_000_000, max_side=30_000)
    img = open_checked(png_header_only(15000, 15000), roomy)  # 225 MP: Pillow alone would refuse it
    assert img.size == (15000, 15000)


def test_formats_that_cannot_be_decoded_reduced_are_refused_past_the_downscale_ratio() -> None:
    limits = DecodeLimits(max_pixels=60_000_000, max_side=10_000, max_downscale=400)
    with pytest.raises(ImageTooLarge, match=r"7000x7000 PNG image is 748 times the pixels this model reads"):
        decode_image(png_header_only(7000, 7000), limits, min_size=256)  # refused before its data is read
    small_model = decode_image(solid((9, 9, 9), size=(1800, 1800)), limits, min_size=28)
    assert small_model.size == (1800, 1800)  # 4,000 times 28x28, but under 4 MP: cheap, allowed
    no_resize = decode_image(solid((9, 9, 9), size=(300, 300)), limits, min_size=None)
    assert no_resize.size == (300, 300)


def test_the_request_budget_is_charged_what_each_decode_costs() -> None:
    budget = PixelBudget(3_000_000)
    out = decode_image(solid((10, 200, 10), size=(4096, 2048), fmt="JPEG"), LIMITS, min_size=256, budget=budget)
    assert out.size == (512, 256)  # decoded at 1/8 scale...
    assert budget.used == 4096 * 2048 // 8  # ...but its entropy decoding still reads every coefficient
    decode_image(solid((9, 9, 9), size=(600, 600)), LIMITS, budget=budget)
    assert budget.used == 4096 * 2048 // 8 + 600 * 600
    progressive = _encode(Image.new("RGB", (1200, 1000), (1, 2, 3)), "JPEG", progressive=True)
    out = decode_image(progressive, LIMITS, min_size=128, budget=budget)
    assert out.size == (300, 250)  # 1/4: the smallest scale whose sides are both 128 or more
    assert budget.used == 4096 * 2048 // 8 + 600 * 600 + 1200 * 1000  # progressive: its full size
    with pytest.raises(ImageTooLarge, match="more than 3000000 pixels together"):
        decode_image(solid((9, 9, 9), size=(800, 800)), LIMITS, budget=budget)
    assert budget.used == 4096 * 2048 // 8 + 600 * 600 + 1200 * 1000  # a refused image reserves nothing


def test_zero_width_image() -> None:
    with pytest.raises(InvalidImage):
        decode_image(png_header_only(0, 100), LIMITS)


def test_one_pixel_image_is_too_small() -> None:
    with pytest.raises(ImageTooSmall):
        decode_image(solid((1, 2, 3), size=(1, 1)), LIMITS)
