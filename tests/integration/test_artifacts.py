"""Content-addressed artifact store: atomic writes, dedupe, limits, digests, no leaked paths."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import pytest

from imaas.errors import InvalidRequest, NotFound, PayloadTooLarge
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


@pytest.mark.parametrize(
    "digest",
    ["../../etc/passwd", "a" * 63, "a" * 65, "A" * 64, "g" * 64, "", "../" + "a" * 61, "a" * 64 + "\n"],
    ids=["traversal", "short", "long", "uppercase", "not-hex", "empty", "traversal-of-64", "trailing-newline"],
)
def test_only_a_sha256_digest_names_an_artifact(tmp_path: Path, digest: str) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root")
    for use in (store.path, store.exists, store.open_path):
        with pytest.raises(InvalidRequest, match="sha256: expected 64 lowercase hex characters"):
            use(digest)


def test_a_missing_artifact_names_no_server_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "secret-location" / "artifacts"
    store = LocalArtifactStore(root)
    sha = "ab" * 32
    with caplog.at_level(logging.WARNING, logger="imaas.registry.artifacts.local"), pytest.raises(NotFound) as caught:
        store.open_path(sha)
    assert sha in caught.value.detail
    assert "secret-location" not in caught.value.detail
    assert "/" not in caught.value.detail
    assert str(caught.value) == caught.value.detail
    # the operator still learns where the file was expected
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert str(root / "ab" / sha) in caplog.records[0].getMessage()
