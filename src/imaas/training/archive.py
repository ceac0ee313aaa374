"""Safe reading of an uploaded dataset archive (zip, tar, tar.gz, tar.bz2, tar.xz).

An upload is hostile until proven otherwise, so nothing is written to disk and every entry is
vetted before any member's bytes are read: names that could escape a folder (``../``,
absolute paths, drive letters, backslashes that climb), links, devices, control characters,
encrypted zip members and duplicate names refuse the whole archive. Sizes are checked twice:
first against what the headers declare (free, before decompressing), then against the bytes
actually produced while reading each member in chunks, so an archive whose headers lie is
stopped by what it really unpacks to, not by what it claims. Library exceptions for corrupt
input (bad CRC, truncation, garbage) are translated into ``InvalidArchive`` where they enter.

The type is sniffed from the bytes, never the file name.

Example::

    for member in read_archive(Path("upload.bin"), ArchiveLimits(max_total_bytes=1 << 30)):
        print(member.name, len(member.data))
"""

from __future__ import annotations

import lzma
import re
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imaas.errors import ArchiveTooLarge, InvalidArchive

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 256 * 1024  # bytes read per step while extracting; a limit is overshot by at most this
_DRIVE = re.compile(r"^[A-Za-z]:")
# what zipfile, tarfile and their codecs raise for corrupt or truncated input
_CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
)


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may unpack to; checked against headers first and bytes read always.

    ``max_ratio`` is uncompressed over compressed size, per zip member (with a compressed
    size above 0) and for the whole archive (all members over the archive's file size).
    """

    max_members: int = 100_000
    max_member_bytes: int = 32 * MiB
    max_total_bytes: int = 2 * GiB
    max_ratio: float = 100.0


@dataclass(frozen=True)
class Member:
    """One regular file of the archive: its normalised POSIX relative path and its bytes."""

    name: str
    data: bytes


def read_archive(path: Path, limits: ArchiveLimits = ArchiveLimits()) -> Iterator[Member]:
    """Yield the regular files of the zip or tar at ``path``, directories skipped.

    Every entry is vetted before the first member is yielded, so a bad entry anywhere refuses
    the whole archive (``InvalidArchive``, naming the entry). Limits are enforced while
    reading (``ArchiveTooLarge``, naming the limit). Nothing happens until iteration starts.

    Example::

        names = [m.name for m in read_archive(Path("digits.zip"))]
    """
    size = _file_size(path)
    if _is_zip(path):
        yield from _read_zip(path, size, limits)
    else:
        yield from _read_tar(path, size, limits)


def normalise_name(raw: str) -> str:
    """The safe POSIX relative form of an entry name, or ``InvalidArchive`` naming it.

    Backslashes count as separators (Windows tools write them), ``.`` and empty components
    are dropped; absolute paths, drive letters, any ``..`` component and control characters
    are refused. Returns ``""`` for a name that is only the archive's root (``./``).
    """
    if any(unicodedata.category(c) == "Cc" for c in raw):
        raise InvalidArchive(f"archive entry {raw!r} has a control character in its name", entry=raw)
    name = raw.replace("\\", "/")
    if name.startswith("/"):
        raise InvalidArchive(f"archive entry {raw!r} has an absolute path", entry=raw)
    if _DRIVE.match(name):
        raise InvalidArchive(f"archive entry {raw!r} has a drive letter", entry=raw)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArchive(f"archive entry {raw!r} has a '..' component (it could escape its folder)", entry=raw)
    return "/".join(parts)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise InvalidArchive(f"cannot read the archive ({exc.strerror or type(exc).__name__})") from None


def _is_zip(path: Path) -> bool:
    """A zip starts with a local file header (or is an empty zip's end record) and has a
    central directory; checking the start too keeps a tar that merely ends with a zip member
    from being read as that zip."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
        return head in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(path)
    except OSError:
        return False


@contextmanager
def _corrupt_as_invalid(what: str) -> Iterator[None]:
    """Translate what the archive libraries raise for bad input into ``InvalidArchive``."""
    try:
        yield
    except _CORRUPT as exc:
        raise InvalidArchive(f"corrupt archive: {what} ({type(exc).__name__}: {exc})") from None


class _Budget:
    """Running byte counts for one archive, checked after every chunk read."""

    def __init__(self, limits: ArchiveLimits, archive_size: int) -> None:
        self.limits = limits
        self.archive_size = archive_size
        self.total = 0

    def check_declared(self, name: str, size: int, compressed: int | None, running_total: int) -> None:
        """Refuse on what the headers declare, before any decompression."""
        self._check(name, size, compressed, running_total)

    def read(self, name: str, f: IO[bytes], compressed: int | None) -> bytes:
        """Read ``f`` in chunks, stopping as soon as any limit is passed by the bytes read."""
        chunks: list[bytes] = []
        got = 0
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            got += len(chunk)
            self.total += len(chunk)
            self._check(name, got, compressed, self.total)
            chunks.append(chunk)
        return b"".join(chunks)

    def _check(self, name: str, member: int, compressed: int | None, total: int) -> None:
        lim = self.limits
        if member > lim.max_member_bytes:
            raise ArchiveTooLarge(
                f"archive member {name!r} unpacks past max_member_bytes ({lim.max_member_bytes} bytes)",
                limit="max_member_bytes",
                entry=name,
            )
        if total > lim.max_total_bytes:
            raise ArchiveTooLarge(
                f"the archive unpacks past max_total_bytes ({lim.max_total_bytes} bytes) at member {name!r}",
                limit="max_total_bytes",
                entry=name,
            )
        if compressed and member / compressed > lim.max_ratio:
            raise ArchiveTooLarge(
                f"archive member {name!r} unpacks to more than max_ratio ({lim.max_ratio:g}) times its "
                f"compressed size ({compressed} bytes): a zip bomb",
                limit="max_ratio",
                entry=name,
            )
        if self.archive_size and total / self.archive_size > lim.max_ratio:
            raise ArchiveTooLarge(
                f"the archive unpacks to more than max_ratio ({lim.max_ratio:g}) times its size "
                f"({self.archive_size} bytes) at member {name!r}: a compression bomb",
                limit="max_ratio",
                entry=name,
            )


def _check_members(count: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise ArchiveTooLarge(
            f"the archive has more than max_members ({limits.max_members}) entries", limit="max_members"
        )


def _check_unique(name: str, seen: set[str]) -> None:
    if name in seen:
        raise InvalidArchive(f"archive entry {name!r} appears more than once", entry=name)
    seen.add(name)


def _read_zip(path: Path, size: int, limits: ArchiveLimits) -> Iterator[Member]:
    with _corrupt_as_invalid("cannot read the zip directory"):
        zf = zipfile.ZipFile(path)
    with zf:
        files = _vet_zip(zf, size, limits)
        budget = _Budget(limits, size)
        for info, name in files:
            with _corrupt_as_invalid(f"cannot read zip member {name!r}"), zf.open(info) as f:
                data = budget.read(name, f, info.compress_size)
            yield Member(name, data)


def _vet_zip(zf: zipfile.ZipFile, size: int, limits: ArchiveLimits) -> list[tuple[zipfile.ZipInfo, str]]:
    """Every entry checked from the central directory; the regular files to read, in order."""
    infos = zf.infolist()
    _check_members(len(infos), limits)
    budget = _Budget(limits, size)
    files: list[tuple[zipfile.ZipInfo, str]] = []
    seen: set[str] = set()
    declared = 0
    for info in infos:
        raw = info.filename
        name = normalise_name(raw)
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise InvalidArchive(f"archive entry {raw!r} is a symbolic link", entry=raw)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise InvalidArchive(f"archive entry {raw!r} is a device, fifo or socket", entry=raw)
        if info.flag_bits & 0x1:
            raise InvalidArchive(f"archive entry {raw!r} is encrypted", entry=raw)
        if info.is_dir() or kind == stat.S_IFDIR or not name:
            continue
        _check_unique(name, seen)
        declared += info.file_size
        budget.check_declared(name, info.file_size, info.compress_size, declared)
        files.append((info, name))
    return files


def _read_tar(path: Path, size: int, limits: ArchiveLimits) -> Iterator[Member]:
    with _corrupt_as_invalid("not a zip or tar archive"):
        tf = tarfile.open(path, mode="r:*")  # noqa: SIM115 (closed by the with below, outside the translation)
    with tf:
        files = _vet_tar(tf, size, limits)
        budget = _Budget(limits, size)
        for info, name in files:
            with _corrupt_as_invalid(f"cannot read tar member {name!r}"):
                f = tf.extractfile(info)
                if f is None:  # a regular file always has data; be explicit rather than assert
                    raise InvalidArchive(f"archive entry {info.name!r} has no data", entry=info.name)
                with f:
                    data = budget.read(name, f, None)
            yield Member(name, data)


def _vet_tar(tf: tarfile.TarFile, size: int, limits: ArchiveLimits) -> list[tuple[tarfile.TarInfo, str]]:
    """Walk the headers once (seeking past data), checking each before moving on, so a bomb
    is refused after decompressing at most about the limits, not all of it."""
    budget = _Budget(limits, size)
    files: list[tuple[tarfile.TarInfo, str]] = []
    seen: set[str] = set()
    declared = 0
    count = 0
    while True:
        with _corrupt_as_invalid("cannot read the tar headers"):
            info = tf.next()
        if info is None:
            return files
        count += 1
        _check_members(count, limits)
        raw = info.name
        name = normalise_name(raw)
        if info.issym():
            raise InvalidArchive(f"archive entry {raw!r} is a symbolic link", entry=raw)
        if info.islnk():
            raise InvalidArchive(f"archive entry {raw!r} is a hard link", entry=raw)
        if info.isdir() or (info.isreg() and not name):
            continue
        if not info.isreg():
            raise InvalidArchive(f"archive entry {raw!r} is a device, fifo or other special file", entry=raw)
        _check_unique(name, seen)
        declared += info.size
        budget.check_declared(name, info.size, None, declared)
        files.append((info, name))
