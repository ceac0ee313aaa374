"""Classification metrics against hand-computed values, and the charts drawn from them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imaas.errors import InvalidField
from imaas.training.evaluate import evaluate
from imaas.training.plots import confusion_png, curves_png

CLASSES = ["cat", "dog", "fox"]


def test_metrics_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 0, 2])
    report = evaluate(predictions, labels, CLASSES)
    # confusion rows true, columns predicted:
    #   cat: 2 cat, 1 dog; dog: 1 cat, 1 dog; fox: 1 fox
    assert report["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    cat, dog, fox = (report["per_class"][c] for c in CLASSES)
    # cat: TP 2, predicted 3, support 3 -> P 2/3, R 2/3, F1 2/3
    assert (cat["precision"], cat["recall"], cat["f1"], cat["support"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 3))
    # dog: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
    assert (dog["precision"], dog["recall"], dog["f1"], dog["support"]) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (fox["precision"], fox["recall"], fox["f1"], fox["support"]) == pytest.approx((1, 1, 1, 1))
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert report["classes"] == CLASSES


def test_logits_are_reduced_by_argmax() -> None:
    logits = np.array([[3.0, 0.1, -1], [0.2, 0.1, 5], [-2, 4, 1]])
    labels = np.array([0, 1, 1])
    assert evaluate(logits, labels, CLASSES) == evaluate(np.array([0, 2, 1]), labels, CLASSES)


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    labels = np.array([0, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1])  # fox never predicted
    report = evaluate(predictions, labels, CLASSES)
    fox = report["per_class"]["fox"]
    assert (fox["precision"], fox["recall"], fox["f1"], fox["support"]) == (0.0, 0.0, 0.0, 2)
    dog = report["per_class"]["dog"]
    # dog: TP 1, predicted 3, support 1 -> P 1/3, R 1, F1 = 2 * (1/3) / (4/3) = 1/2
    assert (dog["precision"], dog["recall"], dog["f1"]) == pytest.approx((1 / 3, 1.0, 0.5))
    assert report["macro_f1"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_a_class_without_images_scores_zero_and_empty_input_is_zero() -> None:
    report = evaluate(np.array([0, 1]), np.array([0, 1]), CLASSES)
    assert report["per_class"]["fox"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    empty = evaluate(np.zeros((0, 3)), np.zeros(0, dtype=np.int64), CLASSES)
    assert empty["accuracy"] == 0.0
    assert empty["confusion"] == [[0] * 3] * 3


@pytest.mark.parametrize(
    ("outputs", "labels", "field"),
    [
        (np.zeros((2, 4)), np.array([0, 1]), "outputs"),
        (np.array([0, 1, 2]), np.array([0, 1]), "labels"),
        (np.array([0, 3]), np.array([0, 1]), "outputs"),
        (np.array([0, 1]), np.array([0, -1]), "labels"),
    ],
)
def test_misfit_inputs_name_the_field(outputs: np.ndarray, labels: np.ndarray, field: str) -> None:
    with pytest.raises(InvalidField, match=rf"^{field}: "):
        evaluate(outputs, labels, CLASSES)


def test_charts_are_png_images() -> None:
    report = evaluate(np.array([0, 0, 1, 1, 0, 2]), np.array([0, 0, 0, 1, 1, 2]), CLASSES)
    image = Image.open(io.BytesIO(confusion_png(report["confusion"], report["classes"])))
    assert image.format == "PNG"
    assert image.width >= 300
    many = [f"class-{i}" for i in range(50)]
    big = Image.open(io.BytesIO(confusion_png(np.diag(np.arange(1, 51)).tolist(), many)))
    assert big.width > image.width  # the figure grows with the classes so labels stay readable
    history = [
        {"epoch": e, "train_loss": 1 / e, "train_accuracy": 1 - 0.5 / e, "val_loss": 1.2 / e,
         "val_accuracy": 1 - 0.6 / e, "lr": 1e-3, "seconds": 1.0}
        for e in range(1, 6)
    ]  # fmt: skip
    assert Image.open(io.BytesIO(curves_png(history))).format == "PNG"
    with pytest.raises(InvalidField, match=r"^confusion: "):
        confusion_png([[1, 0], [0, 1]], CLASSES)
