"""Export a PyTorch module to ONNX and prove the export computes the same thing.

ONNX is the one format imaas serves, so every model leaves PyTorch through here: the
bundled zoo models and the networks trained on the platform. ``parity`` runs the exported
file in ONNX Runtime next to the module and refuses an export that drifts, so a version is
never registered whose served outputs differ from the trained ones.

Example::

    export_onnx(model, Path("model.onnx"), channels=1, size=(28, 28))
    diff = parity(model, Path("model.onnx"), np.random.default_rng(0).standard_normal((2, 1, 28, 28), "float32"))
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from imaas.errors import InvalidField, InvalidModel

PARITY_TOLERANCE = 1e-4


def export_onnx(
    module: Any,
    path: Path,
    *,
    channels: int,
    size: tuple[int, int],
    input_name: str = "input",
    output_name: str = "logits",
    opset: int = 17,
) -> None:
    """Export ``module`` (N x channels x H x W float32 in, batch axis dynamic) to ``path``.

    The module is put in eval mode first (dropout off, BatchNorm on its running statistics),
    which is what serving computes. TorchScript-based export (``dynamo=False``): it needs no
    extra packages and gives a plain graph with named inputs and outputs.
    """
    import torch

    if channels < 1:
        raise InvalidField(f"channels: must be >= 1 (got {channels})")
    if input_name == output_name:
        raise InvalidField(f"output_name: must differ from input_name ({input_name!r})")
    module.eval()
    dummy = torch.zeros(1, channels, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def parity(module: Any, path: Path, inputs: np.ndarray | Iterable[np.ndarray], threads: int = 1) -> float:
    """Max absolute difference between PyTorch and ONNX Runtime outputs on ``inputs`` (one
    array, or batches of them so that a large test split is never held at once), with
    ``threads`` ONNX Runtime threads and no spinning (a training job's bounds).

    Raises ``InvalidModel`` when it exceeds ``PARITY_TOLERANCE``.
    """
    import onnxruntime as ort
    import torch

    module.eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    diff = 0.0
    for batch in [inputs] if isinstance(inputs, np.ndarray) else inputs:
        with torch.no_grad():
            expected = module(torch.from_numpy(batch)).numpy()
        got = session.run(None, {name: batch})[0]
        diff = max(diff, float(np.max(np.abs(expected - got)))) if len(batch) else diff
    if not diff < PARITY_TOLERANCE:
        raise InvalidModel(f"ONNX export differs from PyTorch by {diff:.2e} (tolerance {PARITY_TOLERANCE:.0e})")
    return diff
