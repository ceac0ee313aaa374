"""Content-addressed artifact store on the local filesystem.

A file is streamed into a temporary file beside its destination while being hashed, then
fsynced and renamed to ``<sha256[:2]>/<sha256>``: readers never see a partial file, and the
same bytes pushed twice are stored once. Callers commit the registry row only after
``put`` returns, so a crash leaves at worst an unreferenced file, never a dangling row.

Example::

    store = LocalArtifactStore(Path("/tmp/imaas/artifacts"))
    sha, size = store.put_stream(open("model.onnx", "rb"))
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imaas.errors import InvalidRequest, NotFound, PayloadTooLarge

CHUNK = 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)


class LocalArtifactStore:
    """Artifacts under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        """Where the artifact ``sha256`` lives (it may not exist).

        Only a sha256 hex digest (64 lowercase hex characters) names an artifact; anything
        else (``../../etc/passwd``) raises ``InvalidRequest`` before a path is built, so no
        caller can reach a file outside the store.
        """
        if not _DIGEST.fullmatch(sha256):
            raise InvalidRequest(f"sha256: expected 64 lowercase hex characters, got {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        """Whether the artifact is stored."""
        return self.path(sha256).is_file()

    def open_path(self, sha256: str) -> Path:
        """The path of a stored artifact; raises ``NotFound`` if it is missing.

        The error names only the digest: where the server keeps its files is logged for the
        operator, never sent to a client.
        """
        p = self.path(sha256)
        if not p.is_file():
            log.warning("artifact %s is missing: expected at %s", sha256, p)
            raise NotFound(f"artifact {sha256} is missing from the artifact store")
        return p

    def stage(self, stream: BinaryIO, max_bytes: int | None = None) -> Staged:
        """Copy ``stream`` into a private temporary file while hashing it.

        The caller validates ``Staged.path`` and then ``commit``s or ``discard``s it.
        Raises ``PayloadTooLarge`` (and keeps nothing) past ``max_bytes``.
        """
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
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

    def commit(self, staged: Staged) -> Path:
        """Move a staged file to its content address (a no-op copy if already stored)."""
        dest = self.path(staged.sha256)
        if dest.is_file():
            staged.path.unlink(missing_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged.path, dest)
            _fsync_dir(dest.parent)
        return dest

    def discard(self, staged: Staged) -> None:
        """Drop a staged file that failed validation."""
        staged.path.unlink(missing_ok=True)

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> tuple[str, int]:
        """Store the bytes of ``stream``; returns ``(sha256, size)``."""
        staged = self.stage(stream, max_bytes)
        self.commit(staged)
        return staged.sha256, staged.size


@dataclass(frozen=True)
class Staged:
    """A hashed upload waiting for validation."""

    path: Path
    sha256: str
    size: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
