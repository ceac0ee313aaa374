"""Content-addressed artifact store on the local filesystem.

A file is streamed into a private temporary file under ``root/tmp`` while being hashed,
then fsynced and renamed to ``<sha256[:2]>/<sha256>``: readers never see a partial file,
and the same bytes pushed twice are stored once. Callers commit the registry row only
after ``commit`` returns, so a crash leaves at worst an unreferenced file (or a staged file
that ``sweep_staging`` removes), never a dangling row.

The S3 store keeps its local cache in one of these, so staging, placing and verifying a
file are written once, here.

Example::

    store = LocalArtifactStore(Path("/tmp/imaas/artifacts"))
    sha, size = store.put_stream(open("model.onnx", "rb"))
    path = store.open_path(sha)  # hashed again: ArtifactCorrupt if the bytes changed
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

from imaas.errors import ArtifactCorrupt, InvalidRequest, NotFound, PayloadTooLarge
from imaas.registry.artifacts.store import Staged

CHUNK = 1024 * 1024
STAGING_PREFIX = "upload-"
_DIGEST = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)



def sweep_files(folder: Path, pattern: str, older_than_s: float) -> int:
    """Remove the files of ``folder`` matching ``pattern`` not modified for ``older_than_s``
    seconds (what a killed process left half-written); returns how many went."""
    cutoff = time.time() - older_than_s
    removed = 0
    for p in folder.glob(pattern):
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except FileNotFoundError:  # committed or discarded meanwhile
            continue
    return removed

class Readable(Protocol):
    """What ``stage`` reads from: an open file, an upload, or an S3 response body."""

    def read(self, amt: int, /) -> bytes: ...


def check_digest(sha256: str) -> str:
    """Return ``sha256`` if it is a sha256 hex digest, else raise ``InvalidRequest``.

    Only 64 lowercase hex characters name an artifact; anything else (``../../etc/passwd``)
    is refused before a path or an object key is built from it.

    Example::

        key = f"models/{check_digest(sha)[:2]}/{sha}"
    """
    if not _DIGEST.fullmatch(sha256):
        raise InvalidRequest(f"sha256: expected 64 lowercase hex characters, got {sha256[:80]!r}")
    return sha256


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class LocalArtifactStore:
    """Artifacts under one directory (the embedded default, and the S3 store's cache)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def staging_dir(self) -> Path:
        """Where staged files wait; on the same filesystem as the store, so commit is a rename."""
        return self.root / "tmp"

    def path(self, sha256: str) -> Path:
        """Where the artifact ``sha256`` lives (it may not exist).

        Only a sha256 hex digest names an artifact (see ``check_digest``), so no caller can
        reach a file outside the store.
        """
        check_digest(sha256)
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        """Whether the artifact is stored."""
        return self.path(sha256).is_file()

    def open_path(self, sha256: str, *, verify: bool = True) -> Path:
        """The path of a stored artifact, hashed again first when ``verify``.

        Raises ``NotFound`` when it is missing and ``ArtifactCorrupt`` when its bytes no
        longer hash to ``sha256`` (disk rot, a hand edit); the file is left in place for the
        operator. Errors name only the digest: where the server keeps its files is logged
        for the operator, never sent to a client.
        """
        p = self.path(sha256)
        if not p.is_file():
            log.warning("artifact %s is missing: expected at %s", sha256, p)
            raise NotFound(f"artifact {sha256} is missing from the artifact store")
        if verify:
            actual = file_sha256(p)
            if actual != sha256:
                log.warning("artifact %s at %s hashes to %s", sha256, p, actual)
                raise ArtifactCorrupt(f"artifact {sha256}: its stored bytes no longer hash to its sha256")
        return p

    def stage(self, stream: Readable, max_bytes: int | None = None) -> Staged:
        """Copy ``stream`` into a private temporary file while hashing it.

        The caller validates ``Staged.path`` and then ``commit``s or ``discard``s it.
        Raises ``PayloadTooLarge`` (and keeps nothing) past ``max_bytes``.
        """
        tmp_dir = self.staging_dir
        tmp_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=STAGING_PREFIX)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(f"artifact exceeds {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Staged(path=tmp, sha256=digest.hexdigest(), size=size)

    def commit(self, staged: Staged, *, keep: bool = False) -> None:
        """Place a staged file at its content address (nothing new if already stored).

        The staged file is renamed into place, or, when ``keep``, hard-linked (copied where
        links are not possible) so it stays where it was; the directory is fsynced either
        way, so a committed artifact survives a crash.
        """
        dest = self.path(staged.sha256)
        if dest.is_file():
            if not keep:
                staged.path.unlink(missing_ok=True)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        if keep:
            self._place_copy(staged.path, dest)
        else:
            os.replace(staged.path, dest)
        _fsync_dir(dest.parent)

    def discard(self, staged: Staged) -> None:
        """Drop a staged file that failed validation."""
        staged.path.unlink(missing_ok=True)

    def delete(self, sha256: str) -> None:
        """Remove the artifact; no error when it is already gone."""
        self.path(sha256).unlink(missing_ok=True)

    def sweep_staging(self, older_than_s: float) -> int:
        """Remove staged files older than ``older_than_s`` seconds (left by a killed process).

        Younger files may belong to an upload in progress and are kept. Returns how many
        files were removed.
        """
        return sweep_files(self.staging_dir, f"{STAGING_PREFIX}*", older_than_s)

    def put_stream(self, stream: Readable, max_bytes: int | None = None) -> tuple[str, int]:
        """Store the bytes of ``stream`` without a validation step; returns ``(sha256, size)``."""
        staged = self.stage(stream, max_bytes)
        self.commit(staged)
        return staged.sha256, staged.size

    def _place_copy(self, src: Path, dest: Path) -> None:
        """Make ``dest`` hold ``src``'s bytes while ``src`` stays: a hard link, else a copy
        written beside ``dest``'s staging area and renamed, so ``dest`` is never partial."""
        try:
            os.link(src, dest)
            return
        except FileExistsError:  # another writer stored the same bytes meanwhile
            return
        except OSError:  # no hard links here (another filesystem, a restrictive mount)
            pass
        fd, tmp_name = tempfile.mkstemp(dir=self.staging_dir, prefix=STAGING_PREFIX)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
                shutil.copyfileobj(inp, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
