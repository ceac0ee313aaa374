"""Artifacts in an S3-compatible bucket, read through a verified local cache.

Objects live at ``<prefix>/<sha256[:2]>/<sha256>``; every replica of a cluster shares the
bucket. ONNX Runtime loads from a local file, so each process keeps a cache folder laid
out like the local store (it *is* a ``LocalArtifactStore``): uploads are staged there while
hashed, a commit uploads the staged file (only when the object is not already there) and
then moves it into the cache, so the pushing process never downloads what it just pushed.

A read streams the object into a private staging file while hashing it and renames it
into the cache only when the digest matches: a partial or corrupt download is never
visible, and a corrupt object raises ``ArtifactCorrupt`` and leaves nothing behind. A
cached copy is hashed once per process before it is first handed out.

botocore's errors are translated where they enter: a missing object is ``NotFound``, an
endpoint that does not answer (or answers 5xx) is ``RegistryBusy`` (503, retry later),
and a refusal (access denied, no such bucket) is an internal error for the operator.

The client the store builds itself waits briefly on the small calls (HEAD, DELETE: 3 s to
connect, 10 s for an answer, two attempts), so a stalled endpoint costs the registry's
artifact sweep (the one caller under the registry lock) seconds, not minutes; transfers
(uploads, downloads) get their own client with a longer read timeout, because a large
multipart upload's completion may take a while to answer.

Example::

    store = S3ArtifactStore("models", "imaas", home / "artifact-cache")
    staged = store.stage(upload, max_bytes=512 << 20)
    store.commit(staged)
    path = store.open_path(staged.sha256)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaas.errors import ArtifactCorrupt, ImaasError, NotFound, RegistryBusy
from imaas.registry.artifacts.local import LocalArtifactStore, Readable, check_digest
from imaas.registry.artifacts.store import Staged

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_BUSY = frozenset({"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "Throttling", "ServiceUnavailable"})


SMALL_CALLS: dict[str, Any] = {
    "connect_timeout": 3,
    "read_timeout": 10,
    "retries": {"mode": "standard", "total_max_attempts": 2},
}
"""botocore settings of the client for HEAD and DELETE (seconds)."""

TRANSFERS: dict[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 60,
    "retries": {"mode": "standard", "max_attempts": 3},
}
"""botocore settings of the client for uploads and downloads (seconds)."""


class S3ArtifactStore:
    """Artifacts in ``s3://bucket/prefix``, with a local cache under ``cache_dir``.

    ``client`` replaces the boto3 clients the store would build (tests pass one holding
    dummy credentials; it then serves small calls and transfers alike); otherwise
    credentials come from boto3's usual chain. The bucket must exist: the store never
    creates it.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        cache_dir: Path,
        *,
        client: S3Client | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        if client is not None:
            transfer = client
        else:
            import boto3
            from botocore.config import Config

            # bounded waits: a stalled endpoint becomes RegistryBusy, not a hung request
            session = boto3.session.Session()
            client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=Config(**SMALL_CALLS))
            transfer = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=Config(**TRANSFERS))
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._transfer = transfer
        self._cache = LocalArtifactStore(cache_dir)
        # digests whose cached copy this process has hashed (or written itself)
        self._verified: set[str] = set()

    def key(self, sha256: str) -> str:
        """The object key of artifact ``sha256``; ``InvalidRequest`` unless it is a digest."""
        check_digest(sha256)
        name = f"{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def stage(self, stream: Readable, max_bytes: int | None = None) -> Staged:
        """Copy ``stream`` into the cache's staging folder while hashing it; ``PayloadTooLarge``
        past ``max_bytes`` (nothing is kept)."""
        return self._cache.stage(stream, max_bytes)

    def commit(self, staged: Staged, *, keep: bool = False) -> None:
        """Upload a staged file unless the bucket already holds it, then place it in the cache.

        boto3's ``upload_file`` switches to a multipart upload for big files. The staged file
        is moved into the cache (linked or copied when ``keep``), so ``open_path`` finds it
        without a download. If the upload fails the staged file stays for the caller to
        retry or ``discard``.
        """
        key = self.key(staged.sha256)
        if not self._object_exists(staged.sha256, key):
            with _answers(staged.sha256):
                self._transfer.upload_file(str(staged.path), self.bucket, key)
        cached = self._cache.exists(staged.sha256)
        self._cache.commit(staged, keep=keep)
        if not cached:
            self._verified.add(staged.sha256)  # these bytes were hashed while staged

    def discard(self, staged: Staged) -> None:
        """Drop a staged file."""
        self._cache.discard(staged)

    def exists(self, sha256: str) -> bool:
        """Whether the bucket holds the artifact (a HEAD request; the cache is not consulted)."""
        return self._object_exists(sha256, self.key(sha256))

    def open_path(self, sha256: str, *, verify: bool = True) -> Path:
        """A verified local copy of the artifact, downloaded into the cache when missing.

        A cached copy is hashed the first time this process hands it out (when ``verify``);
        one that fails is dropped and fetched again. A download is always hashed while it
        streams and raises ``ArtifactCorrupt``, keeping nothing, when the object's bytes do
        not match. ``NotFound`` when the bucket does not hold it.
        """
        path = self._cache.path(sha256)
        if path.is_file():
            try:
                self._cache.open_path(sha256, verify=verify and sha256 not in self._verified)
            except ArtifactCorrupt:
                log.warning("cached copy of artifact %s failed its checksum; fetching it again", sha256)
                self._cache.delete(sha256)
            except NotFound:  # deleted meanwhile (delete in another thread, a cleared cache)
                pass
            else:
                if verify:
                    self._verified.add(sha256)
                return path
        self._verified.discard(sha256)
        return self._download(sha256)

    def delete(self, sha256: str) -> None:
        """Remove the object and the cached copy; no error when they are already gone."""
        key = self.key(sha256)
        with _answers(sha256):
            self._client.delete_object(Bucket=self.bucket, Key=key)
        self._verified.discard(sha256)
        self._cache.delete(sha256)

    def sweep_staging(self, older_than_s: float) -> int:
        """Remove staged uploads and interrupted downloads older than ``older_than_s``."""
        return self._cache.sweep_staging(older_than_s)

    def _object_exists(self, sha256: str, key: str) -> bool:
        try:
            with _answers(sha256):
                self._client.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return False
        return True

    def _download(self, sha256: str) -> Path:
        with _answers(sha256):
            body = self._transfer.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"]
            try:
                staged = self._cache.stage(body)
            finally:
                body.close()
        if staged.sha256 != sha256:
            self._cache.discard(staged)
            log.warning("object s3://%s/%s hashes to %s, not to its name", self.bucket, self.key(sha256), staged.sha256)
            raise ArtifactCorrupt(f"artifact {sha256}: the bytes in the artifact store do not hash to its sha256")
        self._cache.commit(staged)
        self._verified.add(sha256)
        return self._cache.path(sha256)


@contextmanager
def _answers(sha256: str) -> Iterator[None]:
    """Translate what boto3 raises inside the block into the error tree."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError) as exc:  # configuration, not an outage: no retry-after
        log.error("the artifact store has no usable credentials (AWS_ACCESS_KEY_ID...): %s", exc)
        raise ImaasError("the artifact store refused the request: the server has no credentials for it") from exc
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        # boto3's transfer errors (S3UploadFailedError) wrap the ClientError that caused them
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ClientError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            log.warning("the artifact store did not answer: %s", exc)
            raise RegistryBusy(f"the artifact store did not answer: {type(exc).__name__}") from exc
        code = str(cause.response.get("Error", {}).get("Code", ""))
        status = int(cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in _MISSING:
            raise NotFound(f"artifact {sha256} is missing from the artifact store") from exc
        if status >= 500 or code in _BUSY:
            log.warning("the artifact store did not answer: %s", exc)
            raise RegistryBusy(f"the artifact store did not answer: {code or status}") from exc
        log.error("the artifact store refused a request (check the bucket and credentials): %s", exc)
        raise ImaasError(f"the artifact store refused the request: {code or status}") from exc
