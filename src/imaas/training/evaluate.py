"""Classification metrics of a trained model on held-out images, from NumPy arrays alone.

Accuracy, per-class precision, recall, F1 and support, their macro-averaged F1 and the
confusion matrix: what a model card and the console show for a trained version. A ratio
whose denominator is 0 is defined as 0 (a class never predicted has precision 0, a class
with no image has recall 0, and F1 is 0 when precision + recall is 0), as scikit-learn does
with ``zero_division=0``, so the result is always plain JSON without NaN.

Example::

    report = evaluate(logits, y_test, ["cat", "dog"])
    report["accuracy"], report["per_class"]["cat"]["f1"], report["confusion"]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from imaas.errors import InvalidField


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den is 0."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """classes x classes counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def evaluate(outputs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of ``outputs`` against the true ``labels`` (class indices into ``classes``).

    ``outputs`` is either N x classes scores (logits or probabilities: the arg-max is the
    prediction) or N predicted class indices. Returns ``accuracy``, ``per_class`` (by label:
    ``precision``, ``recall``, ``f1``, ``support``), ``macro_f1`` (the mean F1 over every
    class, absent ones included), ``confusion`` (rows true, columns predicted) and ``classes``.
    Raises ``InvalidField`` naming ``outputs`` or ``labels`` when they do not fit.
    """
    k = len(classes)
    outputs = np.asarray(outputs)
    labels = np.asarray(labels)
    if k < 1 or len(set(classes)) != k:
        raise InvalidField(f"classes: expected distinct class names, got {list(classes)[:10]}")
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise InvalidField(f"labels: expected N integer class indices, got {labels.dtype} {labels.shape}")
    if outputs.ndim == 2:
        if outputs.shape[1] != k:
            raise InvalidField(f"outputs: {outputs.shape[1]} scores per image but {k} classes")
        predictions = outputs.argmax(1) if len(outputs) else np.zeros(0, dtype=np.int64)
    elif outputs.ndim == 1 and (outputs.size == 0 or np.issubdtype(outputs.dtype, np.integer)):
        predictions = outputs.astype(np.int64)
    else:
        raise InvalidField(f"outputs: expected N x {k} scores or N class indices, got {outputs.dtype} {outputs.shape}")
    if len(predictions) != len(labels):
        raise InvalidField(f"labels: {len(labels)} labels for {len(predictions)} outputs")
    labels = labels.astype(np.int64)
    for name, values in (("outputs", predictions), ("labels", labels)):
        if values.size and (values.min() < 0 or values.max() >= k):
            raise InvalidField(f"{name}: class indices must be in 0..{k - 1}")

    matrix = confusion_matrix(predictions, labels, k)
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(0).astype(np.float64)
    support = matrix.sum(1)
    precision = _ratio(true_positive, predicted)
    recall = _ratio(true_positive, support.astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = int(support.sum())
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "macro_f1": float(f1.mean()),
        "confusion": matrix.tolist(),
        "classes": list(classes),
    }
