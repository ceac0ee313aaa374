"""Manifest parsing and validation against real ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto

from imaas.errors import InvalidManifest, InvalidModel
from imaas.runtime.graph import check_model_file
from imaas.runtime.tasks import complete_manifest
from imaas.schemas.manifest import Manifest
from imaas.services.models import parse_manifest
from tests.factories import tiny_classifier


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return tiny_classifier(tmp_path / "tiny.onnx")


def test_defaults_are_inferred_from_the_graph(tiny: Path) -> None:
    m = complete_manifest(Manifest(), check_model_file(tiny))
    assert m.input.name == "input"
    assert m.input.layout == "NCHW"
    assert m.input.size == (32, 32)
    assert m.input.dtype == "float32"
    assert m.postprocess.output == "logits"


def test_nhwc_uint8_graph(tmp_path: Path) -> None:
    path = tiny_classifier(tmp_path / "nhwc.onnx", layout="NHWC", dtype=TensorProto.UINT8)
    m = complete_manifest(Manifest(), check_model_file(path))
    assert (m.input.layout, m.input.dtype) == ("NHWC", "uint8")


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ({"input": {"size": [64, 64]}}, "input.size"),
        ({"input": {"dtype": "uint8"}}, "input.dtype"),
        ({"input": {"name": "image"}}, "input.name"),
        ({"input": {"color": "L"}}, "input.layout/color"),
        ({"labels": ["a", "b"]}, "labels"),
        ({"postprocess": {"output": "probs"}}, "postprocess.output"),
        ({"postprocess": {"top_k": 10}}, "postprocess.top_k"),
    ],
)
def test_contradictions_name_the_field(tiny: Path, manifest: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidManifest) as info:
        complete_manifest(parse_manifest(manifest), check_model_file(tiny))
    assert info.value.detail.startswith(field)


def test_labels_list_of_the_right_length_is_accepted(tiny: Path) -> None:
    m = complete_manifest(parse_manifest({"labels": list("abcd")}), check_model_file(tiny))
    assert m.labels == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("task: segmentation", "task"),
        ("input: {layout: CHW}", "input.layout"),
        ("preprocess: {std: [0, 1, 1]}", "preprocess.std"),
        ("labels: imagenet-22k", "labels"),
        ("unknown_key: 1", "unknown_key"),
        ("preprocess: {mean: [1, 2]}", "(root)"),
    ],
)
def test_malformed_manifests(text: str, field: str) -> None:
    with pytest.raises(InvalidManifest) as info:
        parse_manifest(text)
    assert info.value.extra["errors"][0]["field"] == field


def test_manifest_that_is_not_yaml() -> None:
    with pytest.raises(InvalidManifest):
        parse_manifest("{unclosed: [")
    with pytest.raises(InvalidManifest, match="mapping"):
        parse_manifest("- a list")


def test_json_manifest() -> None:
    assert parse_manifest('{"task": "classification", "labels": "imagenet-1k"}').labels == "imagenet-1k"


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not protobuf \x00\xff" * 100)
    with pytest.raises(InvalidModel):
        check_model_file(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InvalidModel):
        check_model_file(empty)
