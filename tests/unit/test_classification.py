"""Classification post-processing."""

from __future__ import annotations

import numpy as np

from imaas.runtime.tasks.classification import postprocess, softmax, to_probabilities, top_k
from imaas.schemas.manifest import Manifest


def test_softmax_is_stable_and_sums_to_one() -> None:
    p = softmax(np.array([1000.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(p, [0.5, 0.5, 0.0], atol=1e-6)


def test_auto_keeps_probabilities_and_softmaxes_logits() -> None:
    probs = np.array([0.1, 0.7, 0.2], dtype=np.float32)
    np.testing.assert_array_equal(to_probabilities(probs, "auto"), probs)
    logits = np.array([2.0, -1.0, 0.5], dtype=np.float32)
    assert abs(float(to_probabilities(logits, "auto").sum()) - 1) < 1e-6


def test_top_k_orders_and_breaks_ties_by_index() -> None:
    assert top_k(np.array([0.1, 0.4, 0.4, 0.1]), 3) == [(1, 0.4), (2, 0.4), (0, 0.1)]
    assert len(top_k(np.array([0.5, 0.5]), 5)) == 2


def test_postprocess_attaches_labels() -> None:
    m = Manifest(labels=["cat", "dog", "fish"])
    out = postprocess([np.array([0.1, 3.0, 0.2])], m, ("cat", "dog", "fish"), 2)
    assert [p["label"] for p in out["predictions"]] == ["dog", "fish"]
