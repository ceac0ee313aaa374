"""Wire models of datasets (``/v1/datasets``), shared by the server and the SDK."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class DatasetVersionInfo(BaseModel):
    """One immutable dataset version: its archive, split, statistics and cleaning report."""

    dataset: str
    version: int
    ref: str = Field(description="name@version, how jobs name it")
    sha256: str = Field(description="of the canonical archive of the images kept")
    size_bytes: int
    created_at: datetime
    created_by: str | None = None
    description: str = ""
    summary: dict[str, Any] = Field(
        description="classes, images, counts per split and class, input size and channels, "
        "per-channel mean and std of the train split (0..1 scale), the split's fractions and seed, layout"
    )
    report: dict[str, Any] = Field(
        description="the cleaning report of the upload: files seen, kept, dropped by reason (with names), "
        "class counts, empty classes, imbalance, labels naming missing files, image sizes (empty in "
        "GET /v1/datasets: read the version for it)"
    )


class DatasetPushResult(DatasetVersionInfo):
    """The answer to an upload: the version (new, or the existing one with the same images,
    labels and split) and this upload's own cleaning report."""

    created: bool = Field(description="false when the same images, labels and split were already a version")


class DatasetSummary(BaseModel):
    """A dataset in a listing."""

    name: str
    created_at: datetime
    versions: int
    latest: DatasetVersionInfo | None = None


class DatasetList(BaseModel):
    """Datasets by name."""

    datasets: list[DatasetSummary]


class DatasetDetail(BaseModel):
    """A dataset and its versions, newest first."""

    name: str
    versions: list[DatasetVersionInfo]


def split_fractions(text: str) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> its three numbers; ``ValueError`` when it is not three numbers
    (whether they make a split is the server's to say). The server and the CLI parse it here."""
    a, b, c = (float(part) for part in text.split(","))
    return a, b, c


def split_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name@version`` -> (name, the text after ``@`` or None), unchecked."""
    name, at, version = ref.partition("@")
    return name, version if at else None
