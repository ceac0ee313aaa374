"""Small real ONNX models and images made at test time (nothing is committed)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def tiny_classifier(
    path: Path,
    classes: int = 4,
    size: tuple[int, int] = (32, 32),
    layout: str = "NCHW",
    dtype: int = 1,
    softmax: bool = False,
    seed: int = 0,
    batch: int | None = None,
) -> Path:
    """A real ONNX classifier: global average pool, then a linear layer to ``classes`` scores.

    Its scores depend on the mean colour, so a red image and a blue image get different classes
    (``tiny_weights`` gives the same weights for computing the expected scores independently).
    ``batch`` fixes the batch axis (dynamic by default).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, w = size
    n: int | str = batch if batch is not None else "batch"
    shape = [n, 3, h, w] if layout == "NCHW" else [n, h, w, 3]
    weight = tiny_weights(classes, seed)
    nodes = []
    x = "input"
    if dtype != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], ["x_float"], to=TensorProto.FLOAT))
        x = "x_float"
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    nodes.append(helper.make_node("ReduceMean", [x, "axes"], ["pooled"], keepdims=0))
    nodes.append(helper.make_node("MatMul", ["pooled", "weight"], ["logits" if not softmax else "raw"]))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["raw"], ["logits"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", dtype, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, classes])],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def tiny_weights(classes: int = 4, seed: int = 0) -> np.ndarray:
    """The (3, classes) weights of ``tiny_classifier``: logits = mean RGB in [0, 1] @ weights."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((3, classes)).astype(np.float32)
    weight[:, 0] = [4, -2, -2]  # class 0 likes red
    if classes > 1:
        weight[:, 1] = [-2, -2, 4]  # class 1 likes blue
    return weight


def solid(color: tuple[int, int, int], size: tuple[int, int] = (64, 48), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """An encoded image of one colour."""
    img = Image.new("RGB", size, color)
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but carries almost no data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def batch_of_one_inside(path: Path, classes: int = 4) -> Path:
    """A classifier whose batch axis is declared dynamic but a ``Reshape`` to ``[1, 3]`` fixes it at 1.

    PyTorch exports often look like this: two stacked images make ONNX Runtime fail.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = tiny_weights(classes)
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0),
        helper.make_node("Reshape", ["pooled", "one_row"], ["row"]),
        helper.make_node("MatMul", ["row", "weight"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "batch-of-one",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array([1, 3], dtype=np.int64), "one_row"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def runtime_refuses(path: Path) -> Path:
    """A graph ``onnx.checker`` accepts and ONNX Runtime refuses to load (float + int64)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0),
        helper.make_node("Add", ["pooled", "offset"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "refused",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.zeros(3, dtype=np.int64), "offset"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def pattern_image(label: int, index: int, size: tuple[int, int] = (28, 28), mode: str = "L") -> bytes:
    """A PNG whose class is easy to learn: class ``label`` draws stripes ``label + 2`` pixels
    apart (horizontal for even labels, vertical for odd ones) over noise that ``index`` seeds."""
    rng = np.random.default_rng(1000 * label + index)
    h, w = size
    pixels = rng.integers(0, 60, (h, w)).astype(np.int64)
    period = label + 2
    if label % 2 == 0:
        pixels[::period, :] += 180
    else:
        pixels[:, ::period] += 180
    gray = np.clip(pixels, 0, 255).astype(np.uint8)
    img = Image.fromarray(gray, mode="L")
    if mode == "RGB":
        img = Image.merge("RGB", (img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), img))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pattern_dataset_zip(
    classes: int = 3, per_class: int = 20, size: tuple[int, int] = (28, 28), mode: str = "L", root: str = "patterns"
) -> bytes:
    """An ImageFolder zip (``root/class-<k>/<i>.png``) of ``pattern_image``s."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for label in range(classes):
            for i in range(per_class):
                z.writestr(f"{root}/class-{label}/{i:03d}.png", pattern_image(label, i, size, mode))
    return buf.getvalue()
