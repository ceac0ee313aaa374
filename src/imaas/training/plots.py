"""PNG charts of a training run: the confusion matrix and the loss and accuracy curves.

Drawn with matplotlib's Agg backend on a ``Figure`` of its own, never pyplot's global
state, so charts can be drawn from any thread or process without a display and without
one chart leaking into the next. matplotlib is imported inside each function: importing
this module costs nothing.

Example::

    png = confusion_png(report["confusion"], report["classes"])
    png = curves_png(result.history)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 100


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attaches itself to the figure: savefig renders with Agg
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def confusion_png(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """The confusion matrix (rows true, columns predicted) as a PNG, counts in the cells.

    Cells are shaded by the fraction of their row (a rare class's errors show as clearly
    as a frequent one's) and the figure grows with the number of classes, so 50 classes
    stay readable; past 15 classes zero cells are left blank.
    """
    import numpy as np
    from matplotlib.figure import Figure

    matrix = np.asarray(confusion, dtype=np.int64)
    k = len(classes)
    if matrix.shape != (k, k):
        from imaas.errors import InvalidField

        raise InvalidField(f"confusion: expected a {k} x {k} matrix for {k} classes, got shape {matrix.shape}")
    rows = matrix.sum(1, keepdims=True)
    shade = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows != 0)
    side = min(max(4.0, 2.0 + 0.36 * k), 22.0)
    font = max(6.0, min(10.0, 300.0 / max(k, 1)))
    fig = Figure(figsize=(side + 1.0, side), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class")
    ax.set_xticks(range(k), labels=list(classes), rotation=90, fontsize=font)
    ax.set_yticks(range(k), labels=list(classes), fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    for i in range(k):
        for j in range(k):
            count = int(matrix[i, j])
            if count == 0 and k > 15:
                continue
            ax.text(
                j, i, str(count), ha="center", va="center", fontsize=font,
                color="white" if shade[i, j] > 0.5 else "black",
            )  # fmt: skip
    return _png(fig)


def curves_png(history: Sequence[dict[str, Any]]) -> bytes:
    """Loss and accuracy by epoch, training and validation, as one PNG of two panels;
    a dashed line marks the epoch of the lowest validation loss (the weights kept)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=_DPI, layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [int(h["epoch"]) for h in history]
    for ax, metric, title in ((loss_ax, "loss", "Loss"), (acc_ax, "accuracy", "Accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            points = [(e, h.get(f"{split}_{metric}")) for e, h in zip(epochs, history, strict=True)]
            xs = [e for e, v in points if v is not None]
            ys = [float(v) for _, v in points if v is not None]
            if xs:
                ax.plot(xs, ys, style, markersize=3, label="training" if split == "train" else "validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    val = [(float(h["val_loss"]), int(h["epoch"])) for h in history if h.get("val_loss") is not None]
    if val:
        best = min(val)[1]
        for ax in (loss_ax, acc_ax):
            ax.axvline(best, linestyle="--", color="grey", linewidth=1, label=f"best epoch ({best})")
    acc_ax.set_ylim(0, 1.02)
    for ax in (loss_ax, acc_ax):
        if ax.has_data():
            ax.legend(fontsize=8)
    return _png(fig)
