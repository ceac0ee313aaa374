"""How ``imaas predict`` prints results: one table per task (classes, boxes, vectors).

Example::

    console.print(results_table(response, ["cat.jpg"]))
"""

from __future__ import annotations

from rich.table import Table

from imaas.cli.terminal import add_plain_row
from imaas.schemas.rest import PredictResponse
from imaas.schemas.results import ClassificationResult, DetectionResult, EmbeddingResult

PREVIEW = 6  # vector components shown per embedding


def results_table(response: PredictResponse, names: list[str]) -> Table:
    """The results of ``response`` as a table whose columns suit its task; ``names`` label the images."""
    title = f"{response.model}@{response.version}"
    rows = list(zip(names, response.results, strict=True))
    if response.task == "detection":
        table = Table("image", "label", "index", "score", "x1", "y1", "x2", "y2", title=title)
        for name, res in rows:
            assert isinstance(res, DetectionResult)
            if not res.detections:
                add_plain_row(table, name, "(nothing found)", "", "", "", "", "", "", end_section=True)
            for n, d in enumerate(res.detections):
                x1, y1, x2, y2 = (f"{v:.1f}" for v in d.box)
                last = n == len(res.detections) - 1
                cells = (name if n == 0 else "", d.label or "", str(d.index), f"{d.score:.3f}", x1, y1, x2, y2)
                add_plain_row(table, *cells, end_section=last)
        return table
    if response.task == "embedding":
        table = Table("image", "dimension", "vector (first components)", title=title)
        for name, res in rows:
            assert isinstance(res, EmbeddingResult)
            head = ", ".join(f"{v:+.4f}" for v in res.embedding[:PREVIEW])
            add_plain_row(table, name, str(res.dimension), f"[{head}, ...]")
        return table
    table = Table("image", "rank", "label", "index", "score", title=title)
    for name, res in rows:
        assert isinstance(res, ClassificationResult)
        for rank, p in enumerate(res.predictions, 1):
            add_plain_row(table, name if rank == 1 else "", str(rank), p.label or "", str(p.index), f"{p.score:.4f}")
    return table
