"""Pick the artifact store from one setting, ``IMAAS_ARTIFACTS_URL``.

Unset (or empty), a plain path or a ``file://`` URL is a local folder; ``s3://bucket/prefix``
is an S3-compatible bucket read through a cache under ``home``. boto3 is imported only
when an ``s3://`` URL asks for it.

Example::

    open_artifacts(None, home)                      # home / "artifacts"
    open_artifacts("/srv/imaas/artifacts", home)
    open_artifacts("s3://models/imaas", home, endpoint_url="http://minio:9000")
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from imaas.errors import InvalidRequest
from imaas.registry.artifacts.local import LocalArtifactStore
from imaas.registry.artifacts.store import ArtifactStore

SETTING = "IMAAS_ARTIFACTS_URL"


def open_artifacts(
    url: str | None,
    home: Path,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> ArtifactStore:
    """The artifact store ``url`` names; ``InvalidRequest`` naming the setting for anything else.

    ``endpoint_url`` and ``region`` reach the S3 client (MinIO, Ceph or a local test server
    need the endpoint); they are ignored for a folder.
    """
    if not url:
        return LocalArtifactStore(home / "artifacts")
    parts = urlsplit(url)
    if parts.scheme == "":
        return LocalArtifactStore(Path(url).expanduser())
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path:
        return LocalArtifactStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc and not (parts.query or parts.fragment):
        from imaas.registry.artifacts.s3 import S3ArtifactStore

        return S3ArtifactStore(
            parts.netloc,
            unquote(parts.path).strip("/"),
            home / "artifact-cache",
            endpoint_url=endpoint_url,
            region=region,
        )
    shown = parts._replace(netloc=parts.hostname or "", query="", fragment="").geturl()  # no credentials
    raise InvalidRequest(f"{SETTING}: expected a folder, a file:// URL or s3://bucket/prefix, got {shown[:80]!r}")
