"""Both artifact stores honour one contract: a local folder, and an S3 bucket on a real moto server.

Every test in the first part runs against both (``backend`` is parametrized); the S3-only
tests cover what a shared bucket adds: a second process reading through an empty cache, a
corrupt object or a broken download never becoming visible, and botocore's errors arriving
as our own. The factory tests close the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.config import Config
from botocore.exceptions import ResponseStreamingError

from imaas.errors import ArtifactCorrupt, ImaasError, InvalidRequest, NotFound, PayloadTooLarge, RegistryBusy
from imaas.registry.artifacts.factory import open_artifacts
from imaas.registry.artifacts.local import LocalArtifactStore
from imaas.registry.artifacts.s3 import S3ArtifactStore
from imaas.registry.artifacts.store import ArtifactStore
from tests.s3server import REGION, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DATA = b"onnx bytes " * 10_000
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Backend:
    """A store under test and the back doors a test needs to check or damage what it holds."""

    store: ArtifactStore
    staging_dir: Path
    local_dir: Path  # the folder (local) or the cache (S3)
    count_stored: Callable[[], int]
    overwrite: Callable[[str, bytes], None]  # replace the stored bytes behind the store's back
    reader: Callable[[], ArtifactStore]  # the store as another process sees it


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def local_backend(tmp_path: Path) -> Backend:
    store = LocalArtifactStore(tmp_path / "artifacts")

    def overwrite(sha: str, data: bytes) -> None:
        store.path(sha).write_bytes(data)

    return Backend(
        store=store,
        staging_dir=store.staging_dir,
        local_dir=store.root,
        count_stored=lambda: len([p for p in files_under(store.root) if p.parent != store.staging_dir]),
        overwrite=overwrite,
        reader=lambda: store,
    )


def s3_backend(tmp_path: Path, endpoint: str, bucket: str) -> Backend:
    client = s3_client(endpoint)

    def make(cache: Path) -> S3ArtifactStore:
        return S3ArtifactStore(bucket, "models/v1", cache, client=client)

    store = make(tmp_path / "cache-a")
    readers = iter(range(1_000))

    def overwrite(sha: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=store.key(sha), Body=data)

    return Backend(
        store=store,
        staging_dir=tmp_path / "cache-a" / "tmp",
        local_dir=tmp_path / "cache-a",
        count_stored=lambda: client.list_objects_v2(Bucket=bucket).get("KeyCount", 0),
        overwrite=overwrite,
        reader=lambda: make(tmp_path / f"cache-reader-{next(readers)}"),
    )


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return local_backend(tmp_path)
    return s3_backend(tmp_path, request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket"))


def push(store: ArtifactStore, data: bytes = DATA, *, keep: bool = False) -> str:
    staged = store.stage(io.BytesIO(data))
    store.commit(staged, keep=keep)
    return staged.sha256


# --- the contract, on both stores ---------------------------------------------------------


def test_stage_commit_open_round_trip(backend: Backend) -> None:
    store = backend.store
    staged = store.stage(io.BytesIO(DATA))
    assert staged.sha256 == SHA
    assert staged.size == len(DATA)
    assert not store.exists(SHA)
    store.commit(staged)
    assert not staged.path.exists()
    assert store.exists(SHA)
    assert hashlib.sha256(store.open_path(SHA).read_bytes()).hexdigest() == SHA
    assert files_under(backend.staging_dir) == []


def test_same_bytes_are_stored_once(backend: Backend) -> None:
    assert push(backend.store) == push(backend.store) == SHA
    assert backend.count_stored() == 1
    assert files_under(backend.staging_dir) == []


def test_over_max_bytes_keeps_nothing(backend: Backend) -> None:
    with pytest.raises(PayloadTooLarge):
        backend.store.stage(io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert files_under(backend.staging_dir) == []
    assert backend.count_stored() == 0


def test_corrupt_bytes_are_refused_and_not_kept(backend: Backend) -> None:
    push(backend.store)
    backend.overwrite(SHA, b"tampered")
    reader = backend.reader()
    with pytest.raises(ArtifactCorrupt) as caught:
        reader.open_path(SHA)
    assert SHA in caught.value.detail
    assert "/" not in caught.value.detail  # names the digest, never a path or a key
    if reader is not backend.store:
        assert files_under(backend.local_dir.parent / "cache-reader-0") == []


def test_missing_artifact_is_not_found(backend: Backend) -> None:
    assert not backend.store.exists(SHA)
    with pytest.raises(NotFound) as caught:
        backend.store.open_path(SHA)
    assert caught.value.detail == f"artifact {SHA} is missing from the artifact store"


def test_delete_removes_the_artifact_and_is_idempotent(backend: Backend) -> None:
    push(backend.store)
    backend.store.open_path(SHA)
    backend.store.delete(SHA)
    assert not backend.store.exists(SHA)
    with pytest.raises(NotFound):
        backend.store.open_path(SHA)
    backend.store.delete(SHA)
    assert files_under(backend.local_dir) == []


def test_commit_keep_leaves_the_staged_file(backend: Backend) -> None:
    staged = backend.store.stage(io.BytesIO(DATA))
    backend.store.commit(staged, keep=True)
    assert staged.path.read_bytes() == DATA
    assert backend.store.open_path(SHA).read_bytes() == DATA
    backend.store.discard(staged)
    assert not staged.path.exists()
    assert backend.store.open_path(SHA).read_bytes() == DATA  # the stored copy does not share its fate


def test_sweep_staging_removes_only_old_files(backend: Backend) -> None:
    old = backend.store.stage(io.BytesIO(b"left by a killed process"))
    young = backend.store.stage(io.BytesIO(b"an upload in progress"))
    an_hour_ago = time.time() - 3600
    os.utime(old.path, (an_hour_ago, an_hour_ago))
    assert backend.store.sweep_staging(older_than_s=600) == 1
    assert not old.path.exists()
    assert young.path.exists()
    assert backend.store.sweep_staging(older_than_s=600) == 0


@pytest.mark.parametrize("digest", ["../../etc/passwd", "A" * 64, "a" * 63, "../" + "a" * 61, ""])
def test_only_a_digest_names_an_artifact(backend: Backend, digest: str) -> None:
    uses: list[Callable[[str], Any]] = [backend.store.exists, backend.store.open_path, backend.store.delete]
    for use in uses:
        with pytest.raises(InvalidRequest, match="sha256: expected 64 lowercase hex characters"):
            use(digest)


# --- what a shared bucket adds --------------------------------------------------------------


def test_a_second_process_reads_through_an_empty_cache(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    backend = s3_backend(tmp_path, s3_endpoint, s3_bucket)
    push(backend.store)
    reader = backend.reader()
    path = reader.open_path(SHA)
    assert path.read_bytes() == DATA
    assert path.is_relative_to(tmp_path / "cache-reader-0")
    assert reader.open_path(SHA) == path  # served from the cache the second time


def test_a_push_lands_in_the_pushers_cache(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    backend = s3_backend(tmp_path, s3_endpoint, s3_bucket)
    push(backend.store)
    backend.overwrite(SHA, b"tampered")  # the pusher never downloads what it pushed
    assert backend.store.open_path(SHA).read_bytes() == DATA


def test_a_corrupt_cached_copy_is_fetched_again(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    client = s3_client(s3_endpoint)
    cache = tmp_path / "cache"
    push(S3ArtifactStore(s3_bucket, "p", cache, client=client))
    LocalArtifactStore(cache).path(SHA).write_bytes(b"disk rot")
    restarted = S3ArtifactStore(s3_bucket, "p", cache, client=client)  # a new process: nothing verified yet
    assert restarted.open_path(SHA).read_bytes() == DATA


def test_a_corrupt_object_leaves_nothing_in_the_cache(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    client = s3_client(s3_endpoint)
    store = S3ArtifactStore(s3_bucket, "", tmp_path / "cache", client=client)
    client.put_object(Bucket=s3_bucket, Key=store.key(SHA), Body=DATA[:-1])
    assert store.exists(SHA)
    with pytest.raises(ArtifactCorrupt):
        store.open_path(SHA)
    assert files_under(tmp_path / "cache") == []


class _BrokenBody:
    """An S3 response body whose connection drops after its first chunk."""

    def __init__(self, body: Any) -> None:
        self.body, self.reads = body, 0

    def read(self, amt: int | None = None) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise ResponseStreamingError(error="connection reset")
        data: bytes = self.body.read(amt)
        return data

    def close(self) -> None:
        self.body.close()


class _DroppingClient:
    """The real client, except that downloads break halfway."""

    def __init__(self, client: S3Client) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def get_object(self, **kwargs: Any) -> Any:
        response = dict(self.client.get_object(**kwargs))
        response["Body"] = _BrokenBody(response["Body"])
        return response


def test_a_broken_download_is_never_visible(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    client = s3_client(s3_endpoint)
    big = os.urandom(3 << 20)  # several chunks, so the first one reaches the disk before the drop
    sha = hashlib.sha256(big).hexdigest()
    push(S3ArtifactStore(s3_bucket, "p", tmp_path / "pusher", client=client), big)
    store = S3ArtifactStore(s3_bucket, "p", tmp_path / "cache", client=_DroppingClient(client))  # type: ignore[arg-type]
    with pytest.raises(RegistryBusy, match="the artifact store did not answer"):
        store.open_path(sha)
    assert files_under(tmp_path / "cache") == []


def test_an_endpoint_that_does_not_answer_is_registry_busy(tmp_path: Path) -> None:
    import boto3

    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    client = session.client(
        "s3", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1}, connect_timeout=1)
    )
    store = S3ArtifactStore("models", "p", tmp_path, client=client)
    with pytest.raises(RegistryBusy) as caught:
        store.exists(SHA)
    assert caught.value.status == 503
    assert caught.value.retry_after is not None
    assert "127.0.0.1" not in caught.value.detail


def test_a_store_built_from_a_url_waits_briefly_on_small_calls(tmp_path: Path) -> None:
    # HEAD and DELETE may run under the registry lock (the artifact sweep): a stalled endpoint
    # must cost seconds there; transfers keep a longer read timeout for big uploads
    store = open_artifacts("s3://models/p", tmp_path, endpoint_url="http://127.0.0.1:9", region=REGION)
    assert isinstance(store, S3ArtifactStore)
    small, transfer = store._client.meta.config, store._transfer.meta.config
    assert (small.connect_timeout, small.read_timeout, small.retries["total_max_attempts"]) == (3, 10, 2)
    assert (transfer.connect_timeout, transfer.read_timeout) == (5, 60)


def test_a_missing_bucket_is_a_refusal_not_a_missing_artifact(tmp_path: Path, s3_endpoint: str) -> None:
    store = S3ArtifactStore("no-such-bucket-here", "p", tmp_path, client=s3_client(s3_endpoint))
    with pytest.raises(ImaasError) as caught:
        store.open_path(SHA)
    assert type(caught.value) is ImaasError
    assert caught.value.status == 500
    assert "NoSuchBucket" in caught.value.detail


# --- the factory ---------------------------------------------------------------------------


def test_factory_defaults_to_a_folder_under_home(tmp_path: Path) -> None:
    for url in (None, ""):
        store = open_artifacts(url, tmp_path)
        assert isinstance(store, LocalArtifactStore)
        assert store.root == tmp_path / "artifacts"


def test_factory_opens_folders_by_path_or_file_url(tmp_path: Path) -> None:
    for url in (str(tmp_path / "elsewhere"), f"file://{tmp_path}/elsewhere", (tmp_path / "elsewhere").as_uri()):
        store = open_artifacts(url, tmp_path)
        assert isinstance(store, LocalArtifactStore)
        assert store.root == tmp_path / "elsewhere"


def test_factory_opens_a_bucket(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_artifacts(f"s3://{s3_bucket}/models/v1/", tmp_path, endpoint_url=s3_endpoint, region=REGION)
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix) == (s3_bucket, "models/v1")
    assert store.key(SHA) == f"models/v1/{SHA[:2]}/{SHA}"
    # the client the factory built reaches the endpoint (moto takes any credentials)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    store = open_artifacts(f"s3://{s3_bucket}/models/v1/", tmp_path, endpoint_url=s3_endpoint, region=REGION)
    assert push(store) == SHA
    assert (tmp_path / "artifact-cache" / SHA[:2] / SHA).read_bytes() == DATA


@pytest.mark.parametrize("url", ["gs://bucket/prefix", "s3:///prefix", "file://remote-host/x", "s3://b/p?x=1"])
def test_factory_refuses_other_urls_naming_the_setting(tmp_path: Path, url: str) -> None:
    with pytest.raises(InvalidRequest, match="IMAAS_ARTIFACTS_URL"):
        open_artifacts(url, tmp_path)


def test_a_big_file_goes_up_in_parts_and_comes_back_whole(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    big = os.urandom(9 << 20)  # past boto3's 8 MiB multipart threshold
    backend = s3_backend(tmp_path, s3_endpoint, s3_bucket)
    sha = push(backend.store, big)
    head = s3_client(s3_endpoint).head_object(
        Bucket=s3_bucket, Key=S3ArtifactStore(s3_bucket, "models/v1", tmp_path).key(sha)
    )
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload's ETag counts its parts
    assert hashlib.sha256(backend.reader().open_path(sha).read_bytes()).hexdigest() == sha


def test_s3_without_credentials_is_a_configuration_error_not_an_outage(
    s3_endpoint: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3ArtifactStore(s3_bucket, "p", tmp_path / "cache", endpoint_url=s3_endpoint, region=REGION)
    with pytest.raises(ImaasError) as caught:
        store.exists("0" * 64)
    assert not isinstance(caught.value, RegistryBusy)
    assert (caught.value.status, caught.value.retry_after) == (500, None)
    assert "credentials" in caught.value.detail
