"""Dataset use cases: upload an archive of labelled images, clean it, split it, keep it.

``push`` streams the upload into a private staging file (bounded by
``datasets.max_upload_mib``), unpacks it with every archive limit checked while reading
(``training.archive``), keeps the images the cleaning accepts (``training.dataset``: the
report says what was dropped and why), splits them deterministically by class
(``training.split``), computes the per-channel mean and std of the train split, and stores
the result as one canonical archive (``training.bundle``) in the artifact store, by
sha256, before the version row is written. The upload itself is never kept.

Names follow the model-name rules, and a key limited to some models sees only the
datasets whose names its patterns match (others are ``DatasetNotFound``, as if absent).

Example::

    version, created, report = service.push("digits", open("digits.zip", "rb"), principal=p)
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from imaas.domain import DatasetVersion, Principal, check_name
from imaas.errors import DatasetNotFound, InvalidField, ModelForbidden, Overloaded
from imaas.registry.artifacts.local import sweep_files
from imaas.registry.artifacts.store import ArtifactStore
from imaas.registry.datasets import DatasetRecord, SqlDatasets
from imaas.registry.fields import check_description
from imaas.schemas.datasets import split_ref
from imaas.settings import DatasetSettings
from imaas.training.archive import ArchiveLimits, read_archive
from imaas.training.bundle import Bundle, read_bundle, write_bundle
from imaas.training.dataset import CleaningReport, LabelledImage, collect
from imaas.training.split import channel_stats, check_fractions, stratified_split

MIB = 1024 * 1024
UPLOAD_PREFIX = "upload-"


@dataclass(frozen=True)
class SplitSpec:
    """How an upload is split: fractions for train, validation and test, and the seed."""

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0


def check_dataset(principal: Principal, name: str) -> None:
    """``DatasetNotFound`` (as if absent) when a key limited to some names does not see ``name``."""
    if not principal.sees(name):
        raise DatasetNotFound(f"no dataset named {name!r}")


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@version`` -> (name, version or None for the newest)."""
    name, version = split_ref(ref)
    check_name(name)
    if not version:
        return name, None
    if not version.isascii() or not version.isdigit() or len(version) > 9:
        raise DatasetNotFound(f"dataset {name!r} has no version {version!r}")
    return name, int(version)


def _pixels(data: bytes, channels: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as opened:
        arr = np.asarray(opened.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def summarize(
    images: list[LabelledImage], splits: list[str], report: CleaningReport, spec: SplitSpec
) -> dict[str, Any]:
    """What a job needs to know about a dataset version without opening it: classes, counts
    per split and class, the common input size, channels, and the train split's statistics."""
    classes = sorted({img.label for img in images})
    channels = Counter(img.channels for img in images).most_common(1)[0][0]
    size, _ = Counter((img.height, img.width) for img in images).most_common(1)[0]
    counts: dict[str, dict[str, int]] = {s: dict.fromkeys(classes, 0) for s in ("train", "validation", "test")}
    for img, split in zip(images, splits, strict=True):
        counts[split][img.label] += 1
    train = (img for img, s in zip(images, splits, strict=True) if s == "train")
    mean, std = channel_stats(_pixels(img.data, channels) for img in train)
    return {
        "classes": classes,
        "images": len(images),
        "counts": counts,
        "input": {"size": list(size), "channels": channels, "color": "L" if channels == 1 else "RGB"},
        "mean": [round(m, 6) for m in mean],
        "std": [round(s, 6) for s in std],
        "split": {"fractions": list(spec.fractions), "seed": spec.seed},
        "layout": report.layout,
    }


class DatasetService:
    """Uploads, lists and opens datasets (synchronous: the edges run it on a thread)."""

    def __init__(
        self,
        datasets: SqlDatasets,
        artifacts: ArtifactStore,
        settings: DatasetSettings,
        upload_dir: Path,
        max_pixels: int = 50_000_000,
    ) -> None:
        self.max_pixels = max_pixels  # the server's image limit (images.max_pixels) holds for datasets too
        # cleaning decodes every image and holds the kept ones: a few at a time, the rest wait outside
        self._uploads = threading.BoundedSemaphore(settings.max_concurrent_uploads)
        self.datasets = datasets
        self.artifacts = artifacts
        self.settings = settings
        self.upload_dir = upload_dir  # where the HTTP edge spools an upload as it arrives

    @contextmanager
    def admission(self) -> Iterator[None]:
        """One of ``datasets.max_concurrent_uploads`` places for an upload while it is spooled
        and cleaned; ``Overloaded`` (429, ``Retry-After``) when they are all taken."""
        if not self._uploads.acquire(blocking=False):
            raise Overloaded(
                f"{self.settings.max_concurrent_uploads} dataset uploads are being received or cleaned; retry later",
                retry_after=5.0,
            )
        try:
            yield
        finally:
            self._uploads.release()

    def sweep_uploads(self, older_than_s: float) -> int:
        """Remove spooled uploads a killed process left behind (younger ones may be arriving)."""
        if not self.upload_dir.is_dir():
            return 0
        return sweep_files(self.upload_dir, f"{UPLOAD_PREFIX}*", older_than_s)

    def limits(self) -> ArchiveLimits:
        """The archive limits the settings give."""
        st = self.settings
        return ArchiveLimits(
            max_members=st.max_members,
            max_member_bytes=st.max_member_mib * MIB,
            max_total_bytes=st.max_total_mib * MIB,
            max_ratio=st.max_ratio,
        )

    def check_push(self, name: str, principal: Principal, split: SplitSpec, description: str = "") -> None:
        """What refuses an upload before a byte of it is read: the name, the key's right to
        it, the split, the description (``push`` checks them again; the HTTP edge calls it
        before spooling)."""
        check_name(name)
        check_description(description)
        if not principal.sees(name):
            raise ModelForbidden(f"this API key may only use the names {', '.join(principal.models or ())}")
        check_fractions(split.fractions)
        if not (split.fractions[1] > 0 and split.fractions[2] > 0):
            raise InvalidField(
                "split: the validation and test fractions must be above 0 (training picks its best epoch on the "
                "validation images and reports its accuracy on the test images)"
            )

    def push(
        self,
        name: str,
        stream: BinaryIO,
        *,
        principal: Principal,
        split: SplitSpec = SplitSpec(),
        description: str = "",
    ) -> tuple[DatasetVersion, bool, dict[str, Any]]:
        """Clean, split and store an uploaded archive as a version of ``name``; returns the
        version, whether it is new (the same images, labels and split again are not), and
        this upload's cleaning report."""
        self.check_push(name, principal, split)
        upload = self.artifacts.stage(stream, self.settings.max_upload_mib * MIB)
        try:
            return self.push_file(name, upload.path, principal=principal, split=split, description=description)
        finally:
            self.artifacts.discard(upload)

    def push_file(
        self,
        name: str,
        archive: Path,
        *,
        principal: Principal,
        split: SplitSpec = SplitSpec(),
        description: str = "",
    ) -> tuple[DatasetVersion, bool, dict[str, Any]]:
        """``push`` of an archive already in a private local file (the HTTP edge spooled it,
        bounded by the body limit), read in place."""
        self.check_push(name, principal, split, description)
        images, report = collect(
            read_archive(archive, self.limits()),
            min_side=self.settings.min_side,
            blank_std=self.settings.blank_std,
            max_pixels=self.max_pixels,
        )
        splits = stratified_split(
            [img.label for img in images], [img.sha256 for img in images], split.fractions, split.seed
        )
        summary = summarize(images, splits, report, split)
        return (*self._store(name, images, splits, summary, report, principal, description), report.to_dict())

    def _store(
        self,
        name: str,
        images: list[LabelledImage],
        splits: list[str],
        summary: dict[str, Any],
        report: CleaningReport,
        principal: Principal,
        description: str,
    ) -> tuple[DatasetVersion, bool]:
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.upload_dir) as buffer:  # under IMAAS_HOME, not a RAM-backed /tmp
            write_bundle(images, splits, summary, buffer)
            buffer.seek(0)
            staged = self.artifacts.stage(buffer)
        try:
            self.artifacts.commit(staged, keep=True)
            return self.datasets.add_version(
                name,
                staged.sha256,
                staged.size,
                summary,
                report.to_dict(),
                created_by=principal.actor,
                description=description,
            )
        finally:
            self.artifacts.discard(staged)

    def list_datasets(self, principal: Principal) -> list[DatasetRecord]:
        """The datasets the caller sees, by name."""
        return [d for d in self.datasets.list_datasets() if principal.sees(d.name)]

    def versions(self, principal: Principal, name: str) -> list[DatasetVersion]:
        """A dataset's versions, newest first."""
        check_dataset(principal, name)
        return self.datasets.list_versions(name)

    def get(self, principal: Principal, ref: str) -> DatasetVersion:
        """The version ``name@version`` (or the newest for ``name``)."""
        name, version = parse_ref(ref)
        check_dataset(principal, name)
        return self.datasets.get_version(name, version)

    def open(self, version: DatasetVersion) -> Bundle:
        """The version's canonical archive, opened for reading (a local copy of the artifact)."""
        return read_bundle(Path(self.artifacts.open_path(version.sha256)))

