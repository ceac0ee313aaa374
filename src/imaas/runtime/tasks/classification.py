"""Classification: scores -> probabilities -> the top-k classes with their labels.

The manifest names one ``[batch, classes]`` output (``postprocess.output``), its ``labels``
and ``activation``; a request may set ``top_k``. OIP: the raw scores, and the protocol's
classification extension (``score:index:label`` strings, ``services/oip.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from imaas.errors import InvalidManifest
from imaas.imaging.pipeline import Geometry
from imaas.runtime.graph import GraphInfo
from imaas.runtime.labelsets import label_count
from imaas.runtime.tasks.base import Labelled, Task, int_option, output_named, refuse_fields, reject_unknown
from imaas.schemas.manifest import Manifest

DETECTION_FIELDS = ("outputs", "format", "normalized", "background", "score", "iou", "max_detections")


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = x.astype(np.float64) - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Element-wise logistic function."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """True when ``scores`` are already a distribution (non-negative, summing to 1)."""
    return bool(np.all(scores >= 0) and np.all(scores <= 1) and abs(float(scores.sum()) - 1.0) < 1e-3)


def to_probabilities(scores: np.ndarray, activation: str) -> np.ndarray:
    """Apply the manifest's activation (``auto`` keeps probabilities, softmaxes logits)."""
    if activation == "softmax" or (activation == "auto" and not looks_like_probabilities(scores)):
        return softmax(scores)
    if activation == "sigmoid":
        return sigmoid(scores)
    return scores.astype(np.float32, copy=False)


def top_k(probs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` highest classes, best first, ties broken by lower index."""
    k = min(k, probs.shape[-1])
    idx = np.argpartition(-probs, k - 1)[:k]
    order = sorted(idx.tolist(), key=lambda i: (-float(probs[i]), i))
    return [(i, float(probs[i])) for i in order]


OPTIONS = ("top_k",)
MAX_TOP_K = 1000


class Classification(Task):
    """Scores -> probabilities (the manifest's ``activation``) -> the top ``top_k`` classes."""

    name = "classification"
    option_names = OPTIONS

    def check(self, manifest: Manifest, graph: GraphInfo) -> Manifest:
        """One ``[batch, classes]`` output, as many labels as classes, ``top_k`` at most the classes."""
        refuse_fields(manifest, self.name, DETECTION_FIELDS)
        post = manifest.postprocess
        tensor = output_named(graph, post.output, "postprocess.output")
        if len(tensor.shape) != 2:
            raise InvalidManifest(
                f"task: a classification output is [batch, classes]; {tensor.name!r} has shape {tensor.shape}"
            )
        classes = tensor.shape[1]
        n_labels = label_count(manifest.labels)
        if classes is not None and n_labels is not None and n_labels != classes:
            raise InvalidManifest(f"labels: {n_labels} labels for {classes} output classes")
        top_k = post.top_k
        if classes is not None and top_k > classes:
            if "top_k" in post.model_fields_set:
                raise InvalidManifest(f"postprocess.top_k: {top_k} exceeds {classes} classes")
            top_k = classes
        return manifest.model_copy(
            update={"postprocess": post.model_copy(update={"output": tensor.name, "top_k": top_k})}
        )

    def options(self, params: Mapping[str, str]) -> int | None:
        """``top_k``: how many classes to answer (default: the manifest's)."""
        if len(params) > 1 or (params and "top_k" not in params):
            reject_unknown(params, OPTIONS, self.name)
        return int_option(params, "top_k", 1, MAX_TOP_K)

    def postprocess(
        self, outputs: list[np.ndarray], geometry: Geometry, model: Labelled, options: int | None
    ) -> dict[str, Any]:
        """``{"predictions": [{index, label, score}, ...]}``, best first."""
        return postprocess(outputs, model.manifest, model.labels, options)

    def agreement(self, a: dict[str, Any], b: dict[str, Any]) -> float:
        """1.0 when both name the same top-1 class (see ``agreement``), else 0.0."""
        return agreement(a, b)


def postprocess(
    outputs: list[np.ndarray], manifest: Manifest, labels: tuple[str, ...] | None, k: int | None
) -> dict[str, Any]:
    """Turn one image's output vector into ``{"predictions": [{index, label, score}, ...]}``."""
    scores = np.asarray(outputs[0]).reshape(-1)
    probs = to_probabilities(scores, manifest.postprocess.activation)
    best = top_k(probs, k or manifest.postprocess.top_k)
    return {
        "predictions": [
            {"index": i, "label": labels[i] if labels is not None and i < len(labels) else None, "score": s}
            for i, s in best
        ]
    }


def agreement(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How far two predictions of one image agree: 1.0 when they name the same top-1 class
    (compared by label when both have labels, so two models with different class orders
    compare fairly; else by index), 0.0 otherwise."""
    pa, pb = a["predictions"][0], b["predictions"][0]
    if pa["label"] is not None and pb["label"] is not None:
        return 1.0 if pa["label"] == pb["label"] else 0.0
    return 1.0 if pa["index"] == pb["index"] else 0.0
