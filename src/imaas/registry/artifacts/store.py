"""The artifact store's contract: content-addressed model files, wherever they live.

Services depend on this protocol only; ``open_artifacts(url, home)`` picks the
implementation (a local folder by default, an S3-compatible bucket with ``s3://``).
ONNX Runtime loads from a local file, so every store hands out a local path: the folder
store its own file, the S3 store a verified copy in its local cache.

A push stages the upload locally while hashing it, validates the staged file, then
``commit``s it (folder: rename into place; S3: upload) before the registry row is written,
so no row ever names bytes that are not stored.

Example::

    store = open_artifacts("s3://models/imaas", home)
    staged = store.stage(upload, max_bytes=512 << 20)
    store.commit(staged)
    path = store.open_path(staged.sha256)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class Staged:
    """A hashed upload in a private local file, waiting for validation."""

    path: Path
    sha256: str
    size: int


class ArtifactStore(Protocol):
    """Model files addressed by their sha256."""

    def stage(self, stream: BinaryIO, max_bytes: int | None = None) -> Staged:
        """Copy ``stream`` to a private local file while hashing it; ``PayloadTooLarge`` past
        ``max_bytes`` (nothing is kept)."""
        ...

    def commit(self, staged: Staged, *, keep: bool = False) -> None:
        """Store a staged file under its sha256 (nothing new when already stored); the staged
        file is removed unless ``keep``."""
        ...

    def discard(self, staged: Staged) -> None:
        """Drop a staged file."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether the artifact is stored."""
        ...

    def open_path(self, sha256: str, *, verify: bool = True) -> Path:
        """A local file holding the artifact's bytes; ``NotFound`` when it is not stored,
        ``ArtifactCorrupt`` when ``verify`` and its bytes do not hash to ``sha256``."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove the artifact (and any local copy); no error when it is already gone."""
        ...

    def sweep_staging(self, older_than_s: float) -> int:
        """Remove staged files older than ``older_than_s`` (left by a killed process); returns
        how many were removed."""
        ...
