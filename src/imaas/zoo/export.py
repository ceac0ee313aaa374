"""Export a PyTorch module to ONNX and prove the export computes the same thing."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from imaas.errors import InvalidModel

PARITY_TOLERANCE = 1e-4


def export_onnx(module: Any, path: Path, size: tuple[int, int], opset: int = 17) -> None:
    """Export ``module`` (NCHW float input, batch axis dynamic) to ``path``."""
    import torch

    module.eval()
    dummy = torch.zeros(1, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def parity(module: Any, path: Path, inputs: np.ndarray) -> float:
    """Max absolute difference between PyTorch and ONNX Runtime outputs on ``inputs``.

    Raises ``InvalidModel`` when it exceeds ``PARITY_TOLERANCE``.
    """
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        expected = module(torch.from_numpy(inputs)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    diff = float(np.max(np.abs(expected - got)))
    if not diff < PARITY_TOLERANCE:
        raise InvalidModel(f"ONNX export differs from PyTorch by {diff:.2e} (tolerance {PARITY_TOLERANCE:.0e})")
    return diff
