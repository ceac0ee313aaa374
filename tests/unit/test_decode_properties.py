"""Property tests: any bytes through ``decode_image`` give an upright RGB/L image within the
limits, every decoded pixel charged to the request's ``PixelBudget``, or a 4xx ``ImaasError``.

Inputs: random bytes (behind each format's magic or not), real PNG/JPEG/GIF/WebP/BMP/TIFF
images (several modes, EXIF orientation) truncated or mutated, and headers rewritten to
declare sizes from 0 to 2**32-1 (see ``tests/hostile.py``).

Memory, in two parts:

- Pillow's pixel buffers come from its own arena, not Python's allocator, so tracemalloc
  does not see them; the arena counts the blocks it allocates, and with 64 KiB blocks
  (set for this module) ``blocks * 64 KiB`` is the pixel memory allocated while handling
  the input. It is bounded by ``32 * pixels charged to the budget + 1 MiB``: every image
  Pillow allocates here has the decoded size at 4 bytes a pixel at most (the decode, one
  EXIF transpose, up to five for a colour conversion with transparency composited on
  white), and an image takes one block even when it is smaller.
- What tracemalloc sees (the copy of the data Pillow reads, parsed headers and EXIF, the
  float arrays that rescale 16-bit and float images) is bounded by
  ``4 * len(data) + 48 * pixels decoded + 1 MiB``: the rescale holds at most three float64
  copies of the image (24 bytes a pixel) and its 8-bit result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from imaas.errors import ImageTooLarge
from imaas.imaging.decode import DecodeLimits, PixelBudget, decode_image
from tests.hostile import SEED_IMAGES, Outcome, assert_bounded, declared_size, examples, handle, image_bytes

BLOCK = 64 * 1024
# Pillow warns about the broken TIFF tags and EXIF blocks these inputs are made of.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
LIMITS = DecodeLimits(max_pixels=1_000_000, max_side=4_096, min_side=8, max_downscale=400.0)


@pytest.fixture(scope="module", autouse=True)
def small_pillow_blocks() -> Iterator[None]:
    """Pillow's arena in 64 KiB blocks, so that counting blocks measures pixel memory."""
    before = Image.core.get_block_size()
    Image.core.set_block_size(BLOCK)
    yield
    Image.core.set_block_size(before)


def decode_measured(data: bytes, min_size: int | None, color: Any, budget: PixelBudget) -> tuple[Outcome, int]:
    """``decode_image`` under ``handle``, and the bytes of pixel blocks Pillow allocated meanwhile."""
    blocks = Image.core.get_stats()["allocated_blocks"]
    outcome = handle(decode_image, data, LIMITS, min_size, color, budget)
    return outcome, (Image.core.get_stats()["allocated_blocks"] - blocks) * BLOCK


@examples(600)
@given(
    image_bytes(),
    st.none() | st.sampled_from([8, 16, 64, 224]),
    st.sampled_from(["RGB", "BGR", "L"]),
    st.just(2_000_000) | st.integers(0, 2_000_000),
)
@example(declared_size("png", 30_000, 30_000), 224, "RGB", 2_000_000)
@example(declared_size("gif", 65_535, 65_535), None, "RGB", 2_000_000)
@example(declared_size("bmp", 2**31 - 1, 1), None, "L", 2_000_000)
@example(declared_size("jpeg", 4_000, 4_000), 8, "RGB", 2_000_000)
@example(declared_size("webp", 2**24, 2**24), None, "RGB", 2_000_000)
@example(declared_size("tiff", 2**32 - 1, 2**32 - 1), None, "RGB", 2_000_000)
@example(declared_size("tiff", 999, 999), None, "RGB", 2_000_000)
@example(SEED_IMAGES["jpeg"], None, "RGB", 10)
def test_any_bytes_decode_within_the_limits_or_are_refused_4xx(
    data: bytes, min_size: int | None, color: Any, budget_pixels: int
) -> None:
    budget = PixelBudget(budget_pixels)
    outcome, pixel_bytes = decode_measured(data, min_size, color, budget)
    assert budget.used <= budget.limit
    assert pixel_bytes <= 32 * budget.used + 1024 * 1024, f"{pixel_bytes} bytes of pixels for {budget.used} charged"
    if outcome.error is not None:
        assert_bounded(outcome, len(data), 4, 1024 * 1024)
        return
    img = outcome.value
    pixels = img.size[0] * img.size[1]
    assert img.mode == ("L" if color == "L" else "RGB")
    assert pixels <= LIMITS.max_pixels
    assert max(img.size) <= LIMITS.max_side
    assert pixels <= budget.used  # every pixel decoded was charged first
    assert_bounded(outcome, len(data), 4, 48 * pixels + 1024 * 1024)


LARGEST = {"png": 2**31 - 1, "gif": 2**16 - 1, "bmp": 2**31 - 1, "jpeg": 2**16 - 1, "webp": 2**24, "tiff": 2**32 - 1}


@st.composite
def huge_headers(draw: st.DrawFn) -> tuple[str, int, int]:
    """A format and a size past ``LIMITS`` that its header can declare: a side past
    ``max_side``, or both sides within it and their product past ``max_pixels``."""
    fmt = draw(st.sampled_from(sorted(LARGEST)))
    if draw(st.booleans()):
        width = draw(st.integers(LIMITS.max_side + 1, LARGEST[fmt]))
        height = draw(st.integers(1, LARGEST[fmt]))
    else:
        width = draw(st.integers(math.isqrt(LIMITS.max_pixels) + 1, LIMITS.max_side))
        height = draw(st.integers(LIMITS.max_pixels // width + 1, LIMITS.max_side))
    return (fmt, width, height) if draw(st.booleans()) else (fmt, height, width)


@examples(80)
@given(huge_headers())
def test_a_header_declaring_a_huge_size_is_refused_before_decoding(case: tuple[str, int, int]) -> None:
    fmt, width, height = case
    data = declared_size(fmt, width, height)
    outcome, pixel_bytes = decode_measured(data, None, "RGB", PixelBudget(10**12))
    assert outcome.error is not None
    assert pixel_bytes == 0  # refused before Pillow allocated a pixel
    assert_bounded(outcome, len(data), 4, 256 * 1024)
    if fmt != "webp":  # libwebp refuses a canvas its frame does not fill before Pillow sees the size
        assert isinstance(outcome.error, ImageTooLarge), outcome.error
