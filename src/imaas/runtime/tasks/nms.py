"""Class-aware non-maximum suppression in NumPy, for detectors whose graph has none.

Boxes of different classes never suppress each other: each class's boxes are shifted by
their own offset, far beyond every coordinate, and one greedy pass over the shifted boxes
suppresses within classes only (the batched-NMS trick torchvision uses). Each step of the
pass compares the best remaining box with all others at once.

Example::

    keep = nms(boxes, scores, classes, iou=0.45, limit=100)  # indices, best first
"""

from __future__ import annotations

import numpy as np

MAX_CANDIDATES = 4096
"""Boxes considered after the score threshold, best first: bounds the work of one image."""


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` ``[n, 4]`` with every box of ``b`` ``[m, 4]``."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: np.ndarray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Indices of the boxes kept, best score first, at most ``limit``.

    ``boxes`` are ``[n, 4]`` corners ``x1, y1, x2, y2``; a box is dropped when it overlaps a
    better box of the same class by more than ``iou``.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")[:MAX_CANDIDATES]
    b = boxes[order].astype(np.float64)
    span = float(np.abs(b).max()) + 1.0
    shifted = b + (classes[order].astype(np.float64) * 2 * span)[:, None]
    x1, y1, x2, y2 = shifted.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    alive = np.ones(len(order), dtype=bool)
    kept: list[int] = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        kept.append(i)
        if len(kept) >= limit:
            break
        rest = np.nonzero(alive[i + 1 :])[0] + i + 1
        if len(rest) == 0:
            break
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        alive[rest[overlap > iou]] = False
    return order[np.asarray(kept, dtype=np.int64)]
