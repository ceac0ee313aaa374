"""A real S3-compatible endpoint for tests: moto's server mode in a subprocess.

``moto_server()`` starts ``python -m moto.server`` on 127.0.0.1 with a free port, waits until
it answers (polling against a deadline, no fixed sleep), yields its URL and stops it (and
waits for it) on exit, so no server outlives the block. ``s3_client(url)`` builds a boto3
client for it with dummy credentials passed explicitly, leaving ``os.environ`` alone.

Example::

    with moto_server() as url:
        client = s3_client(url)
        client.create_bucket(Bucket="models")
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
START_TIMEOUT_S = 30.0


def s3_client(endpoint_url: str) -> S3Client:
    """A boto3 S3 client for ``endpoint_url`` holding dummy credentials."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="test",
        aws_secret_access_key="test",  # moto accepts any credentials
        region_name=REGION,
    )
    return session.client("s3", endpoint_url=endpoint_url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if not with 200
    except OSError:
        return False


@contextmanager
def moto_server(attempts: int = 3) -> Iterator[str]:
    """Run moto's S3-compatible server; yields its endpoint URL.

    The port is chosen free just before the start; should another process take it first,
    the server exits and the next attempt picks another port.
    """
    # the server logs every request: a file, unlike a pipe nobody drains, never fills up
    with tempfile.TemporaryFile() as log:
        for _ in range(attempts):
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + START_TIMEOUT_S
                while proc.poll() is None and time.monotonic() < deadline and not _answers(url):
                    time.sleep(0.05)  # polling interval, not a wait for an outcome
                if proc.poll() is None and _answers(url):
                    yield url
                    return
            finally:
                _stop(proc)
        log.seek(0)
        output = log.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"moto server did not start after {attempts} attempts:\n{output}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
