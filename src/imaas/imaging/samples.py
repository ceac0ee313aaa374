"""Real sample photos for tests and benchmarks, made from the images scikit-image ships.

Nothing is downloaded and nothing is committed: the photos are encoded at call time.
Needs the ``bench`` extra (scikit-image).
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
