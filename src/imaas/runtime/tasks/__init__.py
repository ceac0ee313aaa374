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

Agreement = Callable[[dict[str, Any], dict[str, Any]], float]
"""How far two results of one image agree, from 0 (not at all) to 1 (the same answer)."""

_POSTPROCESSORS: dict[str, Postprocess] = {"classification": classification.postprocess}
_AGREEMENTS: dict[str, Agreement] = {"classification": classification.agreement}


def postprocessor(task: str) -> Postprocess:
    """The post-processing function of ``task``; raises ``InvalidManifest`` for tasks not served yet."""
    try:
        return _POSTPROCESSORS[task]
    except KeyError:
        raise InvalidManifest(
            f"task: {task!r} models cannot be served yet; supported: {sorted(_POSTPROCESSORS)}"
        ) from None


def agreement(task: str) -> Agreement:
    """The measure a shadow comparison uses for ``task`` (classification: same top-1 class)."""
    try:
        return _AGREEMENTS[task]
    except KeyError:
        raise InvalidManifest(f"task: {task!r} has no agreement measure yet") from None
