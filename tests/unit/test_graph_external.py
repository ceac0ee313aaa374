"""ONNX files whose tensors name external data files are refused at push (runtime/graph.py).

ONNX Runtime opens an external data file relative to the model's folder, so a location such
as ``../../etc/passwd`` would read a file outside it into the weights. Every place a tensor
can hide is tried: an initializer, a sparse initializer, a node's tensor attribute, and a
tensor attribute inside a subgraph.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imaas.errors import InvalidModel
from imaas.runtime.graph import check_model_file
from tests.factories import tiny_classifier


def _external(tensor: Any, location: str = "../../../etc/passwd") -> None:
    import onnx

    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v


def _initializer(model: Any) -> str:
    _external(model.graph.initializer[0])
    return str(model.graph.initializer[0].name)


def _node_attribute(model: Any) -> str:
    from onnx import helper, numpy_helper

    t = numpy_helper.from_array(np.zeros(4, np.float32), "hidden_const")
    _external(t)
    model.graph.node.insert(0, helper.make_node("Constant", [], ["unused"], value=t))
    return "hidden_const"


def _subgraph(model: Any) -> str:
    from onnx import helper, numpy_helper

    t = numpy_helper.from_array(np.zeros(1, np.float32), "deep_const")
    _external(t)
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=t)], "b", [], [helper.make_tensor_value_info("c", 1, [1])]
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    model.graph.initializer.append(cond)
    model.graph.node.append(helper.make_node("If", ["cond"], ["if_out"], then_branch=branch, else_branch=branch))
    return "deep_const"


def _sparse(model: Any) -> str:
    from onnx import helper, numpy_helper

    values = numpy_helper.from_array(np.ones(1, np.float32), "sparse_w")
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "sparse_i")
    _external(values)
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    return "sparse_w"


def _neighbour(model: Any) -> str:
    # a plain name inside the folder: the ONNX checker lets it through, ONNX Runtime would read
    # another artifact of the store
    _external(model.graph.initializer[0], "0" * 64)
    return str(model.graph.initializer[0].name)


@pytest.mark.parametrize("hide", [_initializer, _node_attribute, _subgraph, _sparse, _neighbour])
def test_external_data_anywhere_is_refused_by_name(tmp_path: Path, hide: Callable[[Any], str]) -> None:
    import onnx

    path = tiny_classifier(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    name = hide(model)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InvalidModel) as info:
        check_model_file(path)
    assert "external" in info.value.detail
    assert info.value.code == "invalid_model"
    assert repr(name) in info.value.detail


def test_an_embedded_model_still_passes(tmp_path: Path) -> None:
    graph = check_model_file(tiny_classifier(tmp_path / "m.onnx"))
    assert [t.name for t in graph.inputs] == ["input"]
