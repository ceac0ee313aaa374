"""Content-addressed artifact store: atomic writes, dedupe, limits."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from imaas.errors import PayloadTooLarge
from imaas.registry.artifacts.local import LocalArtifactStore


def test_put_is_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    data = b"onnx bytes" * 1000
    sha, size = store.put_stream(io.BytesIO(data))
    assert sha == hashlib.sha256(data).hexdigest()
    assert size == len(data)
    assert store.open_path(sha).read_bytes() == data
    again, _ = store.put_stream(io.BytesIO(data))
    assert again == sha
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [store.path(sha)]  # one copy, no temp files left


def test_stage_then_discard_leaves_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    staged = store.stage(io.BytesIO(b"x" * 100))
    assert staged.path.exists()
    store.discard(staged)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    assert not store.exists(staged.sha256)


def test_too_large_keeps_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(PayloadTooLarge):
        store.put_stream(io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
