"""Run a pushed graph before it is registered: does ONNX Runtime load it, and how may it batch?

``onnx.checker`` accepts graphs that ONNX Runtime refuses (an ``Add`` of float and int64,
say), and a graph can declare a dynamic batch axis while a ``Reshape`` to ``[1, -1]`` inside
fixes it at 1 (common in PyTorch exports). Both used to be found by the first requests, as
503s and 500s. The probe loads the graph and runs zero inputs of batch 1 and, when the axis
is dynamic, batch 2, so push refuses the first (422 ``invalid_model``) and records the
second as ``input.batch: 1``.

Example::

    manifest = probe_manifest(Path("model.onnx"), complete_manifest(manifest, graph))  # runtime.tasks'
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from imaas.errors import InvalidModel
from imaas.runtime.session import OnnxSession, SessionOptions
from imaas.runtime.tasks import task
from imaas.schemas.manifest import Manifest

log = logging.getLogger(__name__)

_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


def probe_manifest(path: Path, manifest: Manifest) -> Manifest:
    """``manifest`` with ``input.batch`` set to 1 when the graph only runs one image at a time.

    Raises ``InvalidModel`` when ONNX Runtime cannot load the graph or run one zero input.
    The manifest must be complete (``complete_manifest``).
    """
    spec = manifest.input
    assert spec.name is not None
    assert spec.size is not None
    assert spec.dtype is not None
    session = OnnxSession(path, SessionOptions())
    h, w = spec.size
    item = (spec.channels, h, w) if spec.layout == "NCHW" else (h, w, spec.channels)
    output = task(manifest.task).fetch(manifest) or session.output_names[:1]
    first = spec.batch or 1
    try:
        session.run({spec.name: np.zeros((first, *item), dtype=_DTYPES[spec.dtype])}, output)
    except Exception as exc:
        raise InvalidModel(f"ONNX Runtime cannot run the model on a zero input: {_short(exc)}") from None
    if spec.batch is not None:
        return manifest
    try:
        session.run({spec.name: np.zeros((2, *item), dtype=_DTYPES[spec.dtype])}, output)
    except Exception as exc:
        log.info("%s runs one image at a time (batch 2 fails: %s)", path.name, _short(exc))
        return manifest.model_copy(update={"input": spec.model_copy(update={"batch": 1})})
    return manifest


def _short(exc: Exception) -> str:
    text = str(exc)
    if "Status Message:" in text:  # keep ONNX Runtime's reason, not its source paths
        text = text.split("Status Message:", 1)[1]
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
