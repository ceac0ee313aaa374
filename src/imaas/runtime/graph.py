"""Read an ONNX graph's interface and check a manifest against it.

``check_model_file`` runs ``onnx.checker`` and returns the graph's inputs and outputs;
``complete_input`` fills what the manifest left out of its input from the graph (name,
layout, size, dtype) and raises ``InvalidManifest`` naming the field that contradicts it.
The outputs are the task's to check (``runtime/tasks``).

Example::

    graph = check_model_file(Path("model.onnx"))
    manifest = complete_input(Manifest(task="classification"), graph)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaas.errors import InvalidManifest, InvalidModel
from imaas.schemas.manifest import Manifest

_ELEM_TYPES = {1: "float32", 10: "float16", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 11: "float64", 9: "bool"}


@dataclass(frozen=True)
class TensorInfo:
    """Name, dtype and shape of a graph input or output; ``None`` dims are dynamic."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class GraphInfo:
    """The interface of an ONNX model."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: int


def check_model_file(path: Path) -> GraphInfo:
    """Validate the ONNX file at ``path`` and describe its interface; raises ``InvalidModel``."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InvalidModel(f"the file is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise InvalidModel("the file is not an ONNX model (empty graph)")
    external = next(_external_tensors(model.graph), None)
    if external is not None:
        # before the checker: ONNX Runtime would open the named file relative to the model's
        # folder, the artifact store's, where ../x leaves it and a plain name reads another
        # model's bytes; refuse every one, wherever it points
        raise InvalidModel(
            f"tensor {external[:64]!r} keeps its data in an external file; models with external data "
            "are not accepted (embed the weights in the .onnx file)"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidModel(f"the ONNX model failed the checker: {str(exc).splitlines()[0][:300]}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_info(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_info(v) for v in model.graph.output)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if not inputs or not outputs:
        raise InvalidModel("the ONNX graph must have at least one input and one output")
    return GraphInfo(inputs=inputs, outputs=outputs, opset=opset)


def _external_tensors(graph: Any) -> Iterator[str]:
    """Names of the tensors anywhere in ``graph`` whose data lives in an external file:
    initializers, sparse initializers and tensor attributes of nodes, in subgraphs too
    (``If``/``Loop``/``Scan`` bodies)."""
    import onnx

    def external(t: Any) -> bool:
        return bool(t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data))

    for t in graph.initializer:
        if external(t):
            yield t.name or "(unnamed)"
    for sp in graph.sparse_initializer:
        for t in (sp.values, sp.indices):
            if external(t):
                yield t.name or sp.values.name or "(unnamed)"
    for node in graph.node:
        for attr in node.attribute:
            for t in (attr.t, *attr.tensors):  # an unset attr.t is an empty, embedded tensor
                if external(t):
                    yield t.name or f"{node.name or node.op_type}.{attr.name}"
            for sub in (attr.g, *attr.graphs):
                yield from _external_tensors(sub)


def _info(value: Any) -> TensorInfo:
    t = value.type.tensor_type
    dims: list[int | None] = []
    for d in t.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None)
    return TensorInfo(name=value.name, dtype=_ELEM_TYPES.get(t.elem_type, f"type{t.elem_type}"), shape=tuple(dims))


def complete_input(manifest: Manifest, graph: GraphInfo) -> Manifest:
    """Fill the manifest's ``input`` blanks from ``graph`` and check it does not contradict the
    graph; the task checks the outputs (``runtime.tasks.complete_manifest`` does both)."""
    spec = manifest.input
    names = [i.name for i in graph.inputs]
    if spec.name is None:
        if len(graph.inputs) != 1:
            raise InvalidManifest(f"input.name: the graph has several inputs {names}; name the image input")
        tensor = graph.inputs[0]
    else:
        found = [i for i in graph.inputs if i.name == spec.name]
        if not found:
            raise InvalidManifest(f"input.name: the graph has no input {spec.name!r}; it has {names}")
        tensor = found[0]
    if len(tensor.shape) != 4:
        raise InvalidManifest(f"input: {tensor.name!r} has rank {len(tensor.shape)}; an image input has rank 4")
    if tensor.dtype not in ("float32", "float16", "uint8"):
        raise InvalidManifest(f"input.dtype: the graph input is {tensor.dtype}; imaas feeds float32, float16 or uint8")
    if spec.dtype is not None and spec.dtype != tensor.dtype:
        raise InvalidManifest(f"input.dtype: manifest says {spec.dtype}, the graph input is {tensor.dtype}")
    layout = spec.layout or _guess_layout(tensor)
    channel_dim = tensor.shape[1] if layout == "NCHW" else tensor.shape[3]
    if channel_dim is not None and channel_dim != spec.channels:
        raise InvalidManifest(
            f"input.layout/color: the graph input has {channel_dim} channels at the {layout} channel axis, "
            f"color {spec.color} needs {spec.channels}"
        )
    hw = tensor.shape[2:4] if layout == "NCHW" else tensor.shape[1:3]
    size = spec.size
    if size is None:
        if hw[0] is None or hw[1] is None:
            raise InvalidManifest("input.size: the graph's spatial size is dynamic; give [height, width]")
        size = (hw[0], hw[1])
    else:
        for axis, (want, have) in enumerate(zip(size, hw, strict=True)):
            if have is not None and want != have:
                side = "height" if axis == 0 else "width"
                raise InvalidManifest(f"input.size: manifest {side} {want} but the graph expects {have}")
    batch = tensor.shape[0]
    if batch is not None and spec.batch is not None and spec.batch != batch:
        raise InvalidManifest(f"input.batch: manifest says {spec.batch} but the graph fixes its batch axis at {batch}")
    batch = batch if batch is not None else spec.batch  # a dynamic axis may still need a fixed size
    return manifest.model_copy(
        update={
            "input": spec.model_copy(
                update={"name": tensor.name, "layout": layout, "size": size, "dtype": tensor.dtype, "batch": batch}
            )
        }
    )


def _guess_layout(tensor: TensorInfo) -> str:
    if tensor.shape[1] in (1, 3):
        return "NCHW"
    if tensor.shape[3] in (1, 3):
        return "NHWC"
    raise InvalidManifest(f"input.layout: cannot tell NCHW from NHWC for shape {tensor.shape}; set it")
