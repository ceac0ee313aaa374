"""A classifier's pooled features as a second output, so that one ONNX file serves as a
classifier and as an embedding model (the artifact store keeps one copy of the bytes).

The features are the input of the classifier's last layer: the ``Gemm`` (or ``MatMul``
followed by ``Add``) that produces the logits output. They are exposed through an
``Identity`` node as the output ``features`` ``[batch, dim]``; the logits stay the first
output, so the classification manifest reads them as before.

Example::

    add_features_output(Path("mobilenet-v2.onnx"))   # outputs: logits [N, 1000], features [N, 1280]
"""

from __future__ import annotations

from pathlib import Path

from imaas.errors import InvalidModel

FEATURES = "features"


def add_features_output(path: Path, name: str = FEATURES) -> int:
    """Rewrite ``path`` with the logits layer's input as the output ``name``; returns its dimension.

    ``InvalidModel`` when the first output is not made by a linear layer over a ``[batch, dim]`` tensor.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    logits = graph.output[0].name
    node = producers.get(logits)
    if node is not None and node.op_type == "Add":
        node = next((producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul"), None)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise InvalidModel(f"{path.name}: the output {logits!r} is not made by a linear layer")
    pooled = node.input[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: v.type.tensor_type.shape for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    shape = shapes.get(pooled)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in shape.dim] if shape is not None else []
    if len(dims) != 2 or not dims[1]:
        raise InvalidModel(f"{path.name}: the logits layer's input {pooled!r} is not [batch, dim] (shape {dims})")
    graph.node.append(helper.make_node("Identity", [pooled], [name], name=f"{name}_output"))
    graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", dims[1]]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return int(dims[1])
