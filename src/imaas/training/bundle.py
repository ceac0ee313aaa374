"""The canonical archive of a dataset version: what the artifact store keeps and jobs read.

One uncompressed tar whose first member is ``dataset.json`` (format, classes, split,
statistics, and one record per image: file, label, split, original name, size, channels)
followed by the images kept, each stored once as ``images/<sha256>.<ext>``. Written
deterministically (sorted members, zero times and owners), so the same images, labels and
split make the same bytes, the same sha256 and so the same dataset version: uploading an
archive again is idempotent. Only the images the cleaning kept are in it, never the
upload as sent.

Example::

    with path.open("wb") as out:
        write_bundle(images, splits, {"classes": ["0", "1"]}, out)
    bundle = read_bundle(path)
    first = bundle.read(bundle.samples[0])
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from imaas.errors import ArtifactCorrupt
from imaas.training.dataset import LabelledImage

BUNDLE_FORMAT = 1
MANIFEST = "dataset.json"
_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


@dataclass(frozen=True)
class BundleSample:
    """One image of a bundle: where it is in the tar and what it is."""

    file: str
    label: str
    split: str
    name: str
    width: int
    height: int
    channels: int


@dataclass
class Bundle:
    """A dataset version opened for reading: its metadata and samples, and the tar."""

    meta: dict[str, Any]
    samples: list[BundleSample]
    path: Path

    def read(self, sample: BundleSample) -> bytes:
        """The encoded bytes of one image (opens the tar; use ``read_all`` for many)."""
        return self.read_all([sample])[0]

    def read_all(self, samples: Sequence[BundleSample]) -> list[bytes]:
        """The encoded bytes of ``samples``, in their order, in one pass over the tar."""
        with tarfile.open(self.path, "r:") as tar:
            members = {m.name: m for m in tar.getmembers()}
            out = []
            for sample in samples:
                member = members.get(sample.file)
                extracted = tar.extractfile(member) if member is not None else None
                if extracted is None:
                    raise ArtifactCorrupt(f"dataset archive {self.path.name}: {sample.file} is missing")
                out.append(extracted.read())
            return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_bundle(
    images: Sequence[LabelledImage], splits: Sequence[str], meta: dict[str, Any], out: BinaryIO
) -> None:
    """Write the canonical tar of ``images`` (with ``splits[i]`` for ``images[i]``) and ``meta``
    (JSON-serialisable: classes, statistics, the split's seed and fractions...) to ``out``."""
    assert len(images) == len(splits)
    order = sorted(range(len(images)), key=lambda i: (images[i].label, images[i].name, images[i].sha256))
    records: list[dict[str, Any]] = []
    for i in order:
        img = images[i]
        records.append(
            {
                "file": f"images/{img.sha256}.{_EXT.get(img.format, 'img')}",
                "label": img.label,
                "split": splits[i],
                "name": img.name,
                "width": img.width,
                "height": img.height,
                "channels": img.channels,
            }
        )
    doc = {"format": BUNDLE_FORMAT, **meta, "samples": records}
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, json.dumps(doc, sort_keys=True, ensure_ascii=False).encode())
        written: set[str] = set()
        for i, rec in zip(order, records, strict=True):
            if rec["file"] not in written:  # one file per distinct image
                written.add(rec["file"])
                _add(tar, rec["file"], images[i].data)


def read_bundle(path: Path) -> Bundle:
    """Open a bundle: its metadata and sample records (the images stay in the tar).

    ``ArtifactCorrupt`` when it is not a bundle this code can read."""
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST:
                raise ArtifactCorrupt(f"{path.name} is not a dataset archive (no {MANIFEST} first)")
            extracted = tar.extractfile(first)
            assert extracted is not None
            doc = json.loads(extracted.read())
    except (tarfile.TarError, json.JSONDecodeError, OSError) as exc:
        raise ArtifactCorrupt(f"{path.name} is not a readable dataset archive: {exc}") from None
    if doc.get("format") != BUNDLE_FORMAT:
        raise ArtifactCorrupt(f"{path.name}: dataset archive format {doc.get('format')!r}, expected {BUNDLE_FORMAT}")
    samples = [BundleSample(**rec) for rec in doc.pop("samples")]
    return Bundle(meta=doc, samples=samples, path=path)
