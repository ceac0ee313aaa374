"""From archive members to labelled images plus a report of what was cleaned out and why.

Two layouts are understood. A *labels file* (exactly one ``*.csv`` or ``*.json`` at the
shallowest depth that has one) names each image's class; otherwise the archive is an
*ImageFolder*: the first folder below the root is the class. Every image is decoded fully
with Pillow (header size checks first, so a decompression bomb costs nothing), and the
ones a model should not learn from are dropped with a stable reason code: not an image,
corrupt, too large, tiny, near-blank, an exact duplicate, the same bytes under two labels
(the label is ambiguous, so every copy goes), unlabelled, or operating-system litter.
The report says what was dropped, the class balance and the image sizes, so the person
who uploaded the archive can fix it; the output is sorted so a given archive always gives
the same dataset.

Example::

    images, report = collect(read_archive(Path("digits.zip")))
    report.class_counts  # {'0': 498, '1': 502, ...}
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from imaas.errors import InvalidDataset
from imaas.imaging.decode import FORMATS
from imaas.training.archive import Member

REASONS = (
    "not_image",
    "corrupt",
    "too_large",
    "tiny",
    "blank",
    "duplicate",
    "cross_class_duplicate",
    "unlabelled",
    "ignored",
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
LABELS_SUFFIXES = frozenset({".csv", ".json"})
FILE_COLUMNS = ("file", "filename", "path", "image")
LABEL_COLUMNS = ("label", "class")
MAX_LABEL_CHARS = 128
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "F"})
Layout = Literal["folders", "labels-file"]


@dataclass(frozen=True)
class LabelledImage:
    """An image kept for training: its archive name, class, content hash, bytes and shape."""

    name: str
    label: str
    sha256: str
    data: bytes
    format: str
    width: int
    height: int
    channels: int


@dataclass(frozen=True)
class Dropped:
    """A file left out of the dataset; ``reason`` is one of ``REASONS``."""

    name: str
    reason: str
    detail: str


@dataclass(frozen=True)
class SizeSummary:
    """The kept images' sizes: the most common (width, height), how many have it, the extremes."""

    most_common: tuple[int, int]
    most_common_count: int
    min_side: int
    max_side: int


@dataclass
class CleaningReport:
    """What ``collect`` kept and dropped, the class balance and the image sizes.

    ``files`` counts every member seen: ``kept + len(dropped)``, plus one for the labels file.
    """

    files: int
    kept: int
    dropped: list[Dropped]
    class_counts: dict[str, int]
    empty_classes: list[str]
    imbalance: float
    missing_files: list[str]
    layout: Layout
    sizes: SizeSummary
    channels: int
    labels_file: str | None = None

    @property
    def by_reason(self) -> dict[str, int]:
        """How many files were dropped for each reason, by reason name."""
        return dict(sorted(Counter(d.reason for d in self.dropped).items()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form; ``dropped`` holds the counts by reason and the list."""
        return {
            "files": self.files,
            "kept": self.kept,
            "dropped": {
                "count": len(self.dropped),
                "by_reason": self.by_reason,
                "items": [asdict(d) for d in self.dropped],
            },
            "class_counts": dict(self.class_counts),
            "empty_classes": list(self.empty_classes),
            "imbalance": self.imbalance,
            "missing_files": list(self.missing_files),
            "layout": self.layout,
            "labels_file": self.labels_file,
            "sizes": {
                "most_common": list(self.sizes.most_common),
                "most_common_count": self.sizes.most_common_count,
                "min_side": self.sizes.min_side,
                "max_side": self.sizes.max_side,
            },
            "channels": self.channels,
        }


@dataclass(frozen=True)
class _Probe:
    """A member that passed every per-file check, waiting for its label and the duplicate pass."""

    name: str
    sha256: str
    data: bytes
    format: str
    width: int
    height: int
    channels: int


def collect(
    members: Iterable[Member],
    *,
    min_side: int = 8,
    blank_std: float = 2.0,
    max_pixels: int = 40_000_000,
) -> tuple[list[LabelledImage], CleaningReport]:
    """Labelled images sorted by (label, name) and the cleaning report, from archive members.

    Raises ``InvalidDataset`` for an ambiguous or malformed labels file, a bad label, or when
    fewer than 2 classes are left with images.

    Example::

        images, report = collect(read_archive(path), min_side=16)
    """
    members = list(members)
    dropped: list[Dropped] = []
    candidates: list[Member] = []
    for m in members:
        if _is_litter(m.name):
            dropped.append(Dropped(m.name, "ignored", "operating-system or hidden file"))
        else:
            candidates.append(m)

    labels_member = _find_labels_file(candidates)
    probes: dict[str, _Probe] = {}
    looks_like_image: list[str] = []
    for m in candidates:
        if m is labels_member:
            continue
        probe = _probe(m, min_side=min_side, blank_std=blank_std, max_pixels=max_pixels)
        if isinstance(probe, Dropped):
            dropped.append(probe)
            if probe.reason != "not_image":
                looks_like_image.append(m.name)
        else:
            probes[m.name] = probe
            looks_like_image.append(m.name)

    missing: list[str] = []
    if labels_member is not None:
        layout: Layout = "labels-file"
        named = _read_labels_file(labels_member)
        labels = {name: label for name, label in named.items() if name in probes}
        present = {m.name for m in members}
        missing = sorted(name for name in named if name not in present)
        classes = set(named.values())
    else:
        layout = "folders"
        labels, classes = _folder_labels(looks_like_image)
        labels = {name: label for name, label in labels.items() if name in probes}

    labelled: list[tuple[str, _Probe]] = []
    for name in sorted(probes):
        if name in labels:
            labelled.append((labels[name], probes[name]))
        elif labels_member is not None:
            dropped.append(Dropped(name, "unlabelled", f"{labels_member.name} does not name it"))
        else:
            dropped.append(Dropped(name, "unlabelled", "not inside a class folder"))

    kept, dup_dropped = _deduplicate(labelled)
    dropped.extend(dup_dropped)
    dropped.sort(key=lambda d: (d.name, d.reason))
    images = sorted(
        (LabelledImage(p.name, label, p.sha256, p.data, p.format, p.width, p.height, p.channels) for label, p in kept),
        key=lambda i: (i.label, i.name),
    )
    counts = dict(sorted(Counter(i.label for i in images).items()))
    if len(counts) < 2:
        found = ", ".join(repr(c) for c in counts)
        hint = f" ({len(missing)} files named by {labels_member.name} are missing)" if missing and labels_member else ""
        raise InvalidDataset(
            f"a dataset needs at least 2 classes; found {len(counts)}{': ' + found if found else ''}{hint}",
            classes=list(counts),
        )
    report = CleaningReport(
        files=len(members),
        kept=len(images),
        dropped=dropped,
        class_counts=counts,
        empty_classes=sorted(classes - set(counts)),
        imbalance=max(counts.values()) / min(counts.values()),
        missing_files=missing,
        layout=layout,
        sizes=_size_summary(images),
        channels=_most_common([i.channels for i in images]),
        labels_file=labels_member.name if labels_member else None,
    )
    return images, report


def _is_litter(name: str) -> bool:
    """macOS resource forks, hidden files and folders, Windows thumbnail caches."""
    parts = name.split("/")
    return "__MACOSX" in parts or any(p.startswith(".") for p in parts) or parts[-1].lower() == "thumbs.db"


def _suffix(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def _depth(name: str) -> int:
    return name.count("/")


def _find_labels_file(members: list[Member]) -> Member | None:
    """The one ``*.csv``/``*.json`` at the shallowest depth that has one, or ``None``."""
    found = [m for m in members if _suffix(m.name) in LABELS_SUFFIXES]
    if not found:
        return None
    top = min(_depth(m.name) for m in found)
    shallowest = sorted((m for m in found if _depth(m.name) == top), key=lambda m: m.name)
    if len(shallowest) > 1:
        names = ", ".join(repr(m.name) for m in shallowest)
        raise InvalidDataset(f"labels file: more than one at the same depth ({names}); keep exactly one")
    return shallowest[0]


def _probe(m: Member, *, min_side: int, blank_std: float, max_pixels: int) -> _Probe | Dropped:
    """Every check one file can fail on its own, cheapest first (header before pixels)."""
    # decode.py lifts Pillow's process-wide guard the same way: max_pixels decides, not Pillow
    if Image.MAX_IMAGE_PIXELS is not None:
        Image.MAX_IMAGE_PIXELS = None
    named_image = _suffix(m.name) in IMAGE_SUFFIXES
    try:
        img = Image.open(io.BytesIO(m.data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        return Dropped(m.name, "too_large", str(exc))
    except Exception as exc:  # Pillow raises many types for bytes it cannot identify
        if named_image:
            return Dropped(m.name, "corrupt", f"named like an image but not decodable ({type(exc).__name__})")
        return Dropped(m.name, "not_image", f"not a {', '.join(FORMATS)} image")
    with img:
        w, h = img.size
        if w * h > max_pixels:
            return Dropped(m.name, "too_large", f"{w}x{h} is {w * h} pixels; the limit is max_pixels={max_pixels}")
        if min(w, h) < min_side:
            return Dropped(m.name, "tiny", f"{w}x{h}; each side must be at least min_side={min_side}")
        try:
            img.load()
            gray = np.asarray(img.convert("L"), dtype=np.float64)
        except Exception as exc:  # truncated data, bad CRC, broken codec streams
            return Dropped(m.name, "corrupt", f"{img.format} image fails to decode ({type(exc).__name__}: {exc})")
        std = float(gray.std())
        if std < blank_std:
            return Dropped(m.name, "blank", f"grayscale std {std:.3f} is below blank_std={blank_std:g}")
        channels = 1 if img.mode in _GRAY_MODES or img.mode.startswith("I;") else 3
        return _Probe(m.name, hashlib.sha256(m.data).hexdigest(), m.data, str(img.format), w, h, channels)


def _check_label(raw: str, where: str) -> str:
    label = raw.strip()
    if not label:
        raise InvalidDataset(f"{where}: the label is empty")
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidDataset(f"{where}: the label {label[:32]!r}... is longer than {MAX_LABEL_CHARS} characters")
    if any(unicodedata.category(c) == "Cc" for c in label):
        raise InvalidDataset(f"{where}: the label {label!r} has a control character")
    return label


def _folder_labels(names: list[str]) -> tuple[dict[str, str], set[str]]:
    """ImageFolder labels: the first folder below the root, and every class folder seen.

    The root goes down one folder while every image sits under that single folder and at
    least one sits in a folder below it (``digits/0/a.png``); so ``cat/a.png`` alone is one
    class ``cat``, not an unlabelled image.
    """
    paths = [n.split("/") for n in names]
    while paths and len({p[0] for p in paths}) == 1 and all(len(p) > 1 for p in paths):
        if not any(len(p) > 2 for p in paths):
            break
        paths = [p[1:] for p in paths]
    labels: dict[str, str] = {}
    for name, parts in zip(names, paths, strict=True):
        if len(parts) > 1:
            labels[name] = _check_label(parts[0], f"class folder {name!r}")
    return labels, set(labels.values())


def _read_labels_file(m: Member) -> dict[str, str]:
    """``{archive name: label}`` from the CSV or JSON labels file; paths are relative to its folder."""
    try:
        text = m.data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidDataset(f"labels file {m.name!r} is not UTF-8 text") from None
    rows = _csv_rows(m.name, text) if _suffix(m.name) == ".csv" else _json_rows(m.name, text)
    folder = posixpath.dirname(m.name)
    out: dict[str, str] = {}
    for where, file, raw_label in rows:
        if not file.strip():
            raise InvalidDataset(f"{where}: the file name is empty")
        label = _check_label(raw_label, where)
        name = posixpath.normpath(posixpath.join(folder, file.strip().replace("\\", "/")))
        if name in out and out[name] != label:
            raise InvalidDataset(f"{where}: {file!r} is labelled both {out[name]!r} and {label!r}")
        out[name] = label
    return out


def _pick(columns: list[str], wanted: tuple[str, ...], what: str, source: str) -> str:
    by_lower = {c.strip().lower(): c for c in columns}
    for w in wanted:
        if w in by_lower:
            return by_lower[w]
    raise InvalidDataset(
        f"labels file {source!r}: no {what} column (one of {', '.join(wanted)}); the header has {columns}"
    )


def _csv_rows(source: str, text: str) -> list[tuple[str, str, str]]:
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = list(reader.fieldnames or [])
        file_col = _pick(columns, FILE_COLUMNS, "file", source)
        label_col = _pick(columns, LABEL_COLUMNS, "label", source)
        return [
            (f"labels file {source!r} row {i}", row.get(file_col) or "", row.get(label_col) or "")
            for i, row in enumerate(reader, start=2)
        ]
    except csv.Error as exc:
        raise InvalidDataset(f"labels file {source!r} is not valid CSV ({exc})") from None


def _json_rows(source: str, text: str) -> list[tuple[str, str, str]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidDataset(f"labels file {source!r} is not valid JSON ({exc})") from None
    if isinstance(doc, dict):
        return [(f"labels file {source!r} entry {k!r}", k, _json_label(v, source, k)) for k, v in doc.items()]
    if isinstance(doc, list):
        rows = []
        for i, item in enumerate(doc):
            where = f"labels file {source!r} item {i}"
            if not isinstance(item, dict):
                raise InvalidDataset(f"{where}: expected an object with file and label")
            keys = [str(k) for k in item]
            file = item[_pick(keys, FILE_COLUMNS, "file", source)]
            if not isinstance(file, str):
                raise InvalidDataset(f"{where}: file must be a string")
            rows.append((where, file, _json_label(item[_pick(keys, LABEL_COLUMNS, "label", source)], source, where)))
        return rows
    raise InvalidDataset(f"labels file {source!r}: expected an object {{file: label}} or a list of {{file, label}}")


def _json_label(value: object, source: str, where: str) -> str:
    # integer class ids ({"a.png": 3}) are common in exported datasets; booleans are not labels
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidDataset(f"labels file {source!r} {where}: the label must be a string or an integer")


def _deduplicate(labelled: list[tuple[str, _Probe]]) -> tuple[list[tuple[str, _Probe]], list[Dropped]]:
    """Keep the first copy (by name) of bytes seen twice in one class; drop every copy of bytes
    seen under two or more classes, since which label is right cannot be known."""
    by_hash: dict[str, list[tuple[str, _Probe]]] = defaultdict(list)
    for label, probe in sorted(labelled, key=lambda lp: lp[1].name):
        by_hash[probe.sha256].append((label, probe))
    kept: list[tuple[str, _Probe]] = []
    dropped: list[Dropped] = []
    for copies in by_hash.values():
        labels = sorted({label for label, _ in copies})
        if len(labels) > 1:
            others = ", ".join(repr(label) for label in labels)
            dropped.extend(
                Dropped(p.name, "cross_class_duplicate", f"the same bytes are labelled {others}") for _, p in copies
            )
            continue
        first = copies[0][1]
        kept.append(copies[0])
        dropped.extend(Dropped(p.name, "duplicate", f"same bytes as {first.name!r}") for _, p in copies[1:])
    return kept, dropped


def _most_common(values: list[Any]) -> Any:
    """The most frequent value; ties go to the smallest, so the answer does not depend on order."""
    counts = Counter(values)
    return min(counts, key=lambda v: (-counts[v], v))


def _size_summary(images: list[LabelledImage]) -> SizeSummary:
    sizes = [(i.width, i.height) for i in images]
    common = _most_common(sizes)
    return SizeSummary(
        most_common=common,
        most_common_count=sizes.count(common),
        min_side=min(min(s) for s in sizes),
        max_side=max(max(s) for s in sizes),
    )
