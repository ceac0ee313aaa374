"""Classification: scores -> probabilities -> the top-k classes with their labels."""

from __future__ import annotations

from typing import Any

import numpy as np

from imaas.schemas.manifest import Manifest


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
