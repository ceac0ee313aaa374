"""ONNX export of a trained network: parity with PyTorch and a dynamic batch axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from imaas.errors import InvalidModel
from imaas.training.architectures import build_model
from imaas.training.config import parse_train_config
from imaas.training.export import PARITY_TOLERANCE, export_onnx, parity


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("channels", "size"), [(1, (28, 28)), (3, (32, 24))])
def test_seed_cnn_exports_with_parity(tmp_path: Path, channels: int, size: tuple[int, int]) -> None:
    model = build_model(parse_train_config({}), channels=channels, size=size, classes=10)
    path = tmp_path / "model.onnx"
    export_onnx(model, path, channels=channels, size=size)
    onnx.checker.check_model(onnx.load(str(path)))
    inputs = np.random.default_rng(0).standard_normal((3, channels, *size), dtype=np.float32)
    assert parity(model, path, inputs) < PARITY_TOLERANCE


def test_the_onnx_runs_a_batch_of_five_under_the_chosen_names(tmp_path: Path) -> None:
    model = build_model(parse_train_config({}), channels=1, size=(28, 28), classes=4).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, channels=1, size=(28, 28), input_name="pixels", output_name="scores")
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert [o.name for o in session.get_outputs()] == ["scores"]
    batch = np.random.default_rng(1).standard_normal((5, 1, 28, 28), dtype=np.float32)
    (got,) = session.run(None, {"pixels": batch})
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    assert got.shape == (5, 4)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_parity_refuses_a_file_of_another_model(tmp_path: Path) -> None:
    config = parse_train_config({})
    path = tmp_path / "model.onnx"
    export_onnx(build_model(config, channels=1, size=(28, 28), classes=4), path, channels=1, size=(28, 28))
    other = build_model(parse_train_config({"seed": 1}), channels=1, size=(28, 28), classes=4)
    inputs = np.random.default_rng(0).standard_normal((2, 1, 28, 28), dtype=np.float32)
    with pytest.raises(InvalidModel, match="differs from PyTorch"):
        parity(other, path, inputs)
