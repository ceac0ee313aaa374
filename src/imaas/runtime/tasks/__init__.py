"""One module per vision task: how raw model outputs become a prediction.

``postprocessor(task)`` returns the pure function for a task; tasks that later issues add
(detection, ocr, embedding, image-to-image) register here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from imaas.errors import InvalidManifest
from imaas.runtime.tasks import classification
from imaas.schemas.manifest import Manifest

Postprocess = Callable[[list[np.ndarray], Manifest, tuple[str, ...] | None, int | None], dict[str, Any]]

_POSTPROCESSORS: dict[str, Postprocess] = {"classification": classification.postprocess}


def postprocessor(task: str) -> Postprocess:
    """The post-processing function of ``task``; raises ``InvalidManifest`` for tasks not served yet."""
    try:
        return _POSTPROCESSORS[task]
    except KeyError:
        raise InvalidManifest(
            f"task: {task!r} models cannot be served yet; supported: {sorted(_POSTPROCESSORS)}"
        ) from None
