"""Embedding: one output vector per image, L2-normalised so that cosine similarity is a dot product.

The manifest names the vector output (``postprocess.output``): ``[batch, dim]``, or the
``[batch, dim, 1, 1]`` of a pooled feature map. A classifier whose graph also outputs its
pooled features serves as an embedding model by pushing the same file with a manifest
naming that output: the artifact store keeps one copy of the bytes.

OIP output: ``embedding`` FP32 ``[N, dim]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imaas.errors import InvalidManifest
from imaas.imaging.pipeline import Geometry
from imaas.runtime.graph import GraphInfo
from imaas.runtime.tasks.base import Labelled, OipOutput, Task, output_named, refuse_fields
from imaas.schemas.manifest import Manifest

MAX_DIMENSION = 65536


def normalized(vector: np.ndarray) -> np.ndarray:
    """``vector`` as float32 of unit length (a zero vector stays zero). It is scaled by its
    largest component first, so that vectors of huge or tiny numbers keep their direction
    instead of overflowing or vanishing in the norm."""
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if not peak > 0 or not np.isfinite(peak):
        return v.astype(np.float32)
    v = v / peak
    out: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
    return out


class Embedding(Task):
    """A unit vector per image."""

    name = "embedding"

    def check(self, manifest: Manifest, graph: GraphInfo) -> Manifest:
        """One output of shape ``[batch, dim]`` or ``[batch, dim, 1, 1]`` with a known ``dim``."""
        refuse_fields(
            manifest,
            self.name,
            ("activation", "top_k", "outputs", "format", "normalized", "background", "score", "iou", "max_detections"),
        )
        post = manifest.postprocess
        tensor = output_named(graph, post.output, "postprocess.output")
        shape = tensor.shape
        flat = len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1))
        if not flat or shape[1] is None or not 1 <= shape[1] <= MAX_DIMENSION:
            raise InvalidManifest(
                f"postprocess.output: an embedding output is [batch, dim] (or [batch, dim, 1, 1]) with a fixed "
                f"dim of at most {MAX_DIMENSION}; {tensor.name!r} has shape {['?' if d is None else d for d in shape]}"
            )
        if manifest.labels is not None:
            raise InvalidManifest("labels: embedding models have no labels")
        return manifest.model_copy(update={"postprocess": post.model_copy(update={"output": tensor.name})})

    def postprocess(
        self, outputs: list[np.ndarray], geometry: Geometry, model: Labelled, options: Any
    ) -> dict[str, Any]:
        """``{"dimension": d, "embedding": [...]}``."""
        v = normalized(outputs[0])
        return {"dimension": int(v.shape[0]), "embedding": v.tolist()}

    def oip_outputs(self, manifest: Manifest) -> list[OipOutput]:
        """``embedding``."""
        return [OipOutput("embedding", "FP32", (-1, -1))]

    def to_oip(self, results: list[dict[str, Any]], manifest: Manifest) -> dict[str, np.ndarray]:
        """The unit vectors stacked."""
        return {"embedding": np.array([r["embedding"] for r in results], dtype=np.float32)}

    def agreement(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        """The cosine similarity of the two vectors, 0 when they point apart or differ in size."""
        va, vb = np.asarray(a["embedding"], dtype=np.float32), np.asarray(b["embedding"], dtype=np.float32)
        if va.shape != vb.shape:
            return 0.0
        return float(max(0.0, min(1.0, float(va @ vb))))
