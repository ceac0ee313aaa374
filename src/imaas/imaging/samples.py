"""Real sample photos for tests and benchmarks, made from the images scikit-image ships,
and the synthetic image a version's warm-up inference decodes.

Nothing is downloaded and nothing is committed: the photos are encoded at call time.
``sample_photo`` needs the ``bench`` extra (scikit-image); ``warmup_image`` only Pillow.
"""

from __future__ import annotations

import io

# Colour photos of 35-75 KB as JPEG q90, the size of a typical upload, with the file names
# ``imaas samples`` gives them (chelsea is a tabby cat).
PHOTOS = {"chelsea": "cat.jpg", "astronaut": "astronaut.jpg", "coffee": "coffee.jpg", "rocket": "rocket.jpg"}


def sample_photo(name: str, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """Encode scikit-image's sample ``name`` (e.g. ``chelsea``, a tabby cat) as ``fmt``."""
    from PIL import Image
    from skimage import data

    array = getattr(data, name)()
    buf = io.BytesIO()
    img = Image.fromarray(array)
    if fmt == "JPEG":
        img.convert("RGB").save(buf, fmt, quality=quality)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def sample_photos() -> dict[str, bytes]:
    """The benchmark workload: every photo of ``PHOTOS`` as JPEG."""
    return {name: sample_photo(name) for name in PHOTOS}


def warmup_image(width: int = 320, height: int = 240) -> bytes:
    """A small colour JPEG (gradients) that exercises decode, pre-processing and the model,
    for the one real inference a version answers before an alias moves to it."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()
