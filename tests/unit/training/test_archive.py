"""Reading uploaded archives: hostile names, links, bombs, corruption, and the good cases."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from imaas.errors import ArchiveTooLarge, ImaasError, InvalidArchive
from imaas.training.archive import CHUNK, ArchiveLimits, Member, _Budget, normalise_name, read_archive

BIG = ArchiveLimits(max_member_bytes=1 << 30, max_total_bytes=1 << 31)  # only max_ratio left to trip


Entry = tuple[str | zipfile.ZipInfo, bytes]


def _zip(path: Path, entries: Sequence[Entry], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _tar(path: Path, entries: Sequence[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return path


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_every_tar_flavour_reads_whatever_its_file_name(tmp_path: Path, mode: str) -> None:
    folder = tarfile.TarInfo("cats")
    folder.type = tarfile.DIRTYPE
    path = _tar(tmp_path / "upload.bin", [folder, ("cats/a.png", b"A" * 10), ("./dogs/b.png", os.urandom(3000))], mode)
    got = list(read_archive(path))
    with tarfile.open(path) as tf:
        want = {m.name.removeprefix("./"): tf.extractfile(m).read() for m in tf if m.isreg()}  # type: ignore[union-attr]
    assert [m.name for m in got] == ["cats/a.png", "dogs/b.png"]  # the directory is skipped
    assert {m.name: m.data for m in got} == want


def test_zip_reads_members_and_skips_directories(tmp_path: Path) -> None:
    payload = os.urandom(5000)
    path = _zip(tmp_path / "x.tar.gz", [("cats/", b""), ("cats/a.png", payload), ("b\\c.png", b"xy")])
    got = list(read_archive(path))
    assert got == [Member("cats/a.png", payload), Member("b/c.png", b"xy")]


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil", "a/../b.png", "..\\..\\evil.png", "/etc/passwd",
                                  "C:/Windows/evil.png", "C:\\evil.png", "a\x01b.png", "cat/\x7f.png"])
def test_zip_entry_that_could_escape_refuses_the_whole_archive(tmp_path: Path, name: str) -> None:
    path = _zip(tmp_path / "a.zip", [("good/first.png", b"ok"), (name, b"evil")])
    members = read_archive(path)
    with pytest.raises(InvalidArchive) as err:
        next(members)  # nothing is yielded, not even the good member before it
    assert repr(name) in err.value.detail


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png", "ok/../../evil"])
def test_tar_entry_that_could_escape_refuses_the_whole_archive(tmp_path: Path, name: str) -> None:
    path = _tar(tmp_path / "a.tar", [("good.png", b"ok"), (name, b"evil")])
    with pytest.raises(InvalidArchive, match="evil"):
        list(read_archive(path))


def test_nul_in_a_name_is_refused() -> None:
    # zipfile and tarfile cut names at NUL themselves, so the guard is checked on the name directly
    with pytest.raises(InvalidArchive, match="control character"):
        normalise_name("a\x00.png")
    assert normalise_name("./a//b/./c.png") == "a/b/c.png"


def test_symlink_in_zip_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("cats/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = _zip(tmp_path / "a.zip", [("cats/a.png", b"x"), (link, b"/etc/passwd")])
    with pytest.raises(InvalidArchive, match="symbolic link"):
        list(read_archive(path))


def test_encrypted_zip_member_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", [("cats/a.png", b"not really encrypted")], method=zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())  # zipfile cannot write encrypted members: set the flag bit by hand
    raw[6] |= 0x1
    raw[raw.rfind(b"PK\x01\x02") + 8] |= 0x1
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("cats/a.png").flag_bits & 0x1
    with pytest.raises(InvalidArchive, match="encrypted"):
        list(read_archive(path))


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (_special("cats/link.png", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (_special("cats/hard.png", tarfile.LNKTYPE, "cats/a.png"), "hard link"),
        (_special("cats/fifo", tarfile.FIFOTYPE), "device, fifo"),
        (_special("cats/dev", tarfile.CHRTYPE), "device, fifo"),
    ],
)
def test_links_and_devices_in_tar_are_refused(tmp_path: Path, entry: tarfile.TarInfo, words: str) -> None:
    path = _tar(tmp_path / "a.tar.gz", [("cats/a.png", b"x"), entry], "w:gz")
    with pytest.raises(InvalidArchive, match=words):
        list(read_archive(path))


def test_zip_bomb_is_stopped_by_the_ratio(tmp_path: Path) -> None:
    path = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(50_000_000))])
    assert path.stat().st_size < 500_000  # ~1000:1, as a bomb is
    with pytest.raises(ArchiveTooLarge) as err:
        list(read_archive(path, BIG))
    assert err.value.extra["limit"] == "max_ratio"


def test_tar_gz_bomb_is_stopped_by_the_ratio(tmp_path: Path) -> None:
    path = _tar(tmp_path / "bomb.tgz", [("zeros.bin", bytes(20_000_000))], "w:gz")
    with pytest.raises(ArchiveTooLarge) as err:
        list(read_archive(path, BIG))
    assert err.value.extra["limit"] == "max_ratio"


def _lie_about_size(path: Path, size: int) -> None:
    """Patch the one member's uncompressed size in its local header and the central directory."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"PK\x03\x04"
    raw[22:26] = size.to_bytes(4, "little")
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = size.to_bytes(4, "little")
    path.write_bytes(bytes(raw))


def test_bomb_whose_header_lies_about_its_size_is_still_stopped(tmp_path: Path) -> None:
    path = _zip(tmp_path / "liar.zip", [("zeros.bin", bytes(50_000_000))])
    _lie_about_size(path, 1000)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("zeros.bin").file_size == 1000  # the headers pass every declared-size check
    # what it really unpacks to is refused: past the ratio, or a CRC mismatch once the declared size is read
    with pytest.raises((ArchiveTooLarge, InvalidArchive)):
        list(read_archive(path, ArchiveLimits(max_member_bytes=1 << 30, max_total_bytes=1 << 31, max_ratio=1e9)))


class _Counting(io.BytesIO):
    """A stream that records how many bytes were taken from it."""

    taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


def test_member_limit_is_enforced_on_the_bytes_read_not_the_header() -> None:
    true_size = 10 * CHUNK
    stream = _Counting(bytes(true_size))
    budget = _Budget(ArchiveLimits(max_member_bytes=3 * CHUNK, max_ratio=1e9), archive_size=1)
    with pytest.raises(ArchiveTooLarge) as err:
        budget.read("lying.bin", stream, compressed=None)  # no declared size was ever consulted
    assert err.value.extra["limit"] == "max_member_bytes"
    assert stream.taken <= 3 * CHUNK + CHUNK < true_size  # stopped within one chunk of the limit


def test_total_size_limit(tmp_path: Path) -> None:
    entries = [(f"cats/{i}.bin", os.urandom(1000)) for i in range(3)]
    path = _zip(tmp_path / "a.zip", entries, method=zipfile.ZIP_STORED)
    assert [m.data for m in read_archive(path, ArchiveLimits(max_total_bytes=3000))] == [d for _, d in entries]
    with pytest.raises(ArchiveTooLarge) as err:
        list(read_archive(path, ArchiveLimits(max_total_bytes=2999)))
    assert err.value.extra["limit"] == "max_total_bytes"


def test_member_count_limit(tmp_path: Path) -> None:
    path = _tar(tmp_path / "a.tar", [(f"cats/{i}.png", b"x") for i in range(5)])
    assert len(list(read_archive(path, ArchiveLimits(max_members=5)))) == 5
    with pytest.raises(ArchiveTooLarge) as err:
        list(read_archive(path, ArchiveLimits(max_members=4)))
    assert err.value.extra["limit"] == "max_members"


def test_truncated_zip_is_invalid(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", [("cats/a.png", os.urandom(4000))])
    path.write_bytes(path.read_bytes()[:2500])
    with pytest.raises(InvalidArchive):
        list(read_archive(path))


def test_bad_crc_in_zip_is_invalid(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", [("cats/a.png", b"A" * 4000)], method=zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF  # inside the stored data
    path.write_bytes(bytes(raw))
    with pytest.raises(InvalidArchive, match="corrupt"):
        list(read_archive(path))


def test_truncated_tar_gz_is_invalid(tmp_path: Path) -> None:
    path = _tar(tmp_path / "a.tgz", [("cats/a.png", os.urandom(20_000)), ("cats/b.png", os.urandom(20_000))], "w:gz")
    path.write_bytes(path.read_bytes()[:25_000])
    with pytest.raises(InvalidArchive):
        list(read_archive(path))


@pytest.mark.parametrize("data", [b"", b"hello, this is not an archive\n" * 50, b"\x89PNG\r\n\x1a\n" + bytes(600),
                                  b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic"])
def test_non_archive_bytes_are_invalid(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    with pytest.raises(InvalidArchive):
        list(read_archive(path))


def test_duplicate_names_after_normalisation_are_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", [("cats/a.png", b"1"), ("./cats//a.png", b"2")])
    with pytest.raises(InvalidArchive, match="more than once"):
        list(read_archive(path))
    tar = _tar(tmp_path / "a.tar", [("cats/a.png", b"1"), ("cats/a.png", b"2")])
    with pytest.raises(InvalidArchive, match="more than once"):
        list(read_archive(tar))


def test_only_our_errors_escape_from_random_corruption(tmp_path: Path) -> None:
    good = _zip(tmp_path / "g.zip", [(f"c/{i}.png", os.urandom(300)) for i in range(4)]).read_bytes()
    tgz = _tar(tmp_path / "g.tgz", [(f"c/{i}.png", os.urandom(300)) for i in range(4)], "w:gz").read_bytes()
    for source in (good, tgz):
        for offset in range(0, len(source), 97):
            broken = bytearray(source)
            broken[offset] ^= 0x5A
            path = tmp_path / "broken"
            path.write_bytes(bytes(broken))
            with contextlib.suppress(ImaasError):  # InvalidArchive or ArchiveTooLarge; anything else fails
                list(read_archive(path))


def _long_name_header(declared: int) -> bytes:
    """A GNU long-name header (type L) declaring ``declared`` bytes of name, then that many
    zero bytes: tarfile reads such a name whole, in one read of the declared size."""
    info = tarfile.TarInfo("././@LongLink")
    info.type = tarfile.GNUTYPE_LONGNAME
    info.size = declared
    return info.tobuf(format=tarfile.GNU_FORMAT)


@pytest.mark.parametrize("opener", ["gzip", "bz2"])
def test_a_long_name_header_declaring_gigabytes_is_refused_before_it_is_read(tmp_path: Path, opener: str) -> None:
    import bz2
    import gzip
    import tracemalloc

    declared = 64 * 1024 * 1024  # 64 MiB of "name": a few hundred bytes compressed
    path = tmp_path / "bomb.tar"
    compress = gzip.open if opener == "gzip" else bz2.open
    with compress(path, "wb") as f:  # type: ignore[operator]
        f.write(_long_name_header(declared))
        zeros = b"\0" * (1 << 20)
        for _ in range(declared // len(zeros)):
            f.write(zeros)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveTooLarge) as err:
            list(read_archive(path, ArchiveLimits(max_total_bytes=1 << 30, max_ratio=1e9)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.extra["limit"] == "max_header_bytes"
    assert peak < 8 * 1024 * 1024  # the declared 64 MiB were never allocated


def test_a_zip_directory_larger_than_max_members_entries_take_is_refused_before_parsing(tmp_path: Path) -> None:
    path = _zip(tmp_path / "many.zip", [(f"c/{i:05d}.png", b"x") for i in range(300)], zipfile.ZIP_STORED)
    with pytest.raises(ArchiveTooLarge) as err:
        list(read_archive(path, ArchiveLimits(max_members=299)))
    assert err.value.extra["limit"] == "max_members"
    assert len(list(read_archive(path, ArchiveLimits(max_members=300)))) == 300


def test_a_zip_end_record_that_understates_its_entries_is_still_bounded_by_the_directory_size(
    tmp_path: Path,
) -> None:
    path = _zip(tmp_path / "lies.zip", [(f"c/{i:05d}.png", b"x") for i in range(300)], zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2  # "1 entry" on this disk and in all
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveTooLarge) as err:  # 300 entries' directory is more than 2 entries take
        list(read_archive(path, ArchiveLimits(max_members=2)))
    assert err.value.extra["limit"] == "max_members"
