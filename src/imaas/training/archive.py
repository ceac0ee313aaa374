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

import bz2
import gzip
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
from typing import IO, BinaryIO, cast

from imaas.errors import ArchiveTooLarge, InvalidArchive

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 256 * 1024  # bytes read per step while extracting; a limit is overshot by at most this
# tarfile reads a GNU long name or a pax header whole, in one read of the size it declares: a
# few hundred compressed bytes can declare gigabytes. Real ones are a few hundred bytes.
MAX_TAR_READ = 1 * MiB
# what one central-directory entry of a zip may take (46 bytes and a name, extra field and
# comment): a directory larger than max_members of these is refused before it is parsed
MAX_ZIP_ENTRY_BYTES = 1024
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


def _zip_directory(path: Path) -> tuple[int, int]:
    """(entries, bytes) of a zip's central directory as its end record declares them (zip64
    included), read from the file's tail before ``zipfile`` parses the whole directory."""
    with path.open("rb") as f:
        f.seek(0, 2)
        end = f.tell()
        tail_start = max(0, end - (22 + 65535 + 20 + 56))
        f.seek(tail_start)
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise InvalidArchive("not a zip archive: it has no end of central directory record")
    entries, directory = struct.unpack("<HI", tail[at + 10 : at + 16])
    locator = at - 20
    if (entries == 0xFFFF or directory == 0xFFFFFFFF) and locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        with path.open("rb") as f:
            f.seek(offset)
            record = f.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 56:
            raise InvalidArchive("the zip64 end of central directory record is missing or damaged")
        entries, directory = struct.unpack("<QQ", record[32:48])
    return entries, directory


def _read_zip(path: Path, size: int, limits: ArchiveLimits) -> Iterator[Member]:
    with _corrupt_as_invalid("cannot read the zip directory"):
        entries, directory = _zip_directory(path)
    _check_members(entries, limits)
    if directory > limits.max_members * MAX_ZIP_ENTRY_BYTES:
        raise ArchiveTooLarge(
            f"the zip's central directory is {directory} bytes, more than max_members ({limits.max_members}) "
            "entries take",
            limit="max_members",
        )
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


class _BoundedReads:
    """A tar's (decompressed) byte stream that refuses any single read over ``MAX_TAR_READ``
    (a header declaring a huge long name or pax record) and stops once more than
    ``max_total_bytes`` and a header allowance have been read, so the memory and work a tar
    costs are bounded by the limits whatever its headers say."""

    def __init__(self, raw: BinaryIO, limits: ArchiveLimits) -> None:
        self.raw = raw
        self.allowed = limits.max_total_bytes + limits.max_members * 2 * tarfile.BLOCKSIZE
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > MAX_TAR_READ:
            raise ArchiveTooLarge(
                f"a tar header declares a record of {n} bytes (a long name or pax header over {MAX_TAR_READ})",
                limit="max_header_bytes",
            )
        data = self.raw.read(n)
        self.count += len(data)
        if self.count > self.allowed:
            raise ArchiveTooLarge(
                f"the archive unpacks past max_total_bytes ({self.allowed} bytes with headers)", limit="max_total_bytes"
            )
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def _decompressed(path: Path) -> BinaryIO:
    """The tar inside ``path``: gzip, bzip2 and xz are undone here (not by tarfile, so every
    byte passes ``_BoundedReads``)."""
    with path.open("rb") as f:
        head = f.read(6)
    if head.startswith(b"\x1f\x8b"):
        return cast(BinaryIO, gzip.open(path, "rb"))
    if head.startswith(b"BZh"):
        return cast(BinaryIO, bz2.open(path, "rb"))
    if head.startswith(b"\xfd7zXZ\x00"):
        return cast(BinaryIO, lzma.open(path, "rb"))
    return path.open("rb")


def _read_tar(path: Path, size: int, limits: ArchiveLimits) -> Iterator[Member]:
    with _corrupt_as_invalid("not a zip or tar archive"):
        raw = _decompressed(path)
    try:
        with _corrupt_as_invalid("not a zip or tar archive"):
            bounded = cast(IO[bytes], _BoundedReads(raw, limits))
            tf = tarfile.open(fileobj=bounded, mode="r:")  # noqa: SIM115 (closed by the with below)
        with tf:
            yield from _tar_members(tf, size, limits)
    finally:
        raw.close()


def _tar_members(tf: tarfile.TarFile, size: int, limits: ArchiveLimits) -> Iterator[Member]:
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
