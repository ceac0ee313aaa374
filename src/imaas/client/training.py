"""The dataset and training-job calls of the SDK, written once for ``Client`` and ``AsyncClient``.

Each ``*_call`` returns a ``Call`` (see ``calls.py``); bodies are sent as given, unchecked:
the server is the one judge of a name, a split or a training option, and answers a bad one
with a problem naming the field. Three things need more than one request and response:

- an upload (``open_upload``): the archive is streamed from its file in chunks, never read
  whole into memory, with its media type read from its first bytes;
- the job's event stream (``SseParser``, ``Follow``): Server-Sent Events parsed line by line,
  and where the connection drops before the job's final state, a reconnect from the last
  event seen (``Last-Event-ID``);
- long waits: an upload is cleaned before the server answers, so it gets a long read timeout.

Example::

    call = get_job_call("job_0123456789ab")
    call.method, call.kwargs["url"]  # ('GET', '/v1/jobs/job_0123456789ab')
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from pydantic import ValidationError

from imaas.client.calls import Call
from imaas.client.common import path_segment as _segment
from imaas.errors import ImaasError, TransportError
from imaas.schemas.datasets import DatasetDetail, DatasetList, DatasetPushResult, DatasetVersionInfo
from imaas.schemas.jobs import FINAL_STATES, JobEventInfo, JobInfo, JobList
from imaas.schemas.training import TrainConfig

ArchiveSource = str | Path | bytes | BinaryIO
Split = tuple[float, float, float]
UPLOAD_READ_S = 600.0  # the server unpacks, cleans and splits the archive before it answers
EVENT_GAP_S = 60.0  # the server pings every 15 s: a minute of silence is a dead connection
MAX_RECONNECTS = 2  # consecutive reconnects that bring no event before giving up
CHUNK = 1024 * 1024
_HEAD = 512  # enough for every signature below (tar's sits at offset 257)

# (media type, offset, magic bytes): the server reads the type from the bytes itself, so
# this only labels the body for proxies and logs; anything else is application/octet-stream.
_ARCHIVE_MAGIC: list[tuple[str, int, bytes]] = [
    ("application/zip", 0, b"PK\x03\x04"),
    ("application/zip", 0, b"PK\x05\x06"),  # an empty zip
    ("application/gzip", 0, b"\x1f\x8b"),
    ("application/x-bzip2", 0, b"BZh"),
    ("application/x-xz", 0, b"\xfd7zXZ\x00"),
    ("application/x-tar", 257, b"ustar"),
]
OCTET_STREAM = "application/octet-stream"


# -- uploads ---------------------------------------------------------------------------------------
def archive_type(head: bytes) -> str:
    """The media type an archive's first bytes show (zip, gzip, bzip2, xz, tar), else
    ``application/octet-stream``.

    Example::

        archive_type(b"PK\\x03\\x04...")  # "application/zip"
    """
    for ctype, offset, magic in _ARCHIVE_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return ctype
    return OCTET_STREAM


@dataclass
class Upload:
    """An archive opened for sending: its first bytes (already read, to name its type), the
    file the rest streams from (None for bytes), and its size when it can be known."""

    head: bytes
    rest: BinaryIO | None
    size: int | None
    owned: bool = False  # opened here from a path, so closed here

    @property
    def content_type(self) -> str:
        """The media type the first bytes show."""
        return archive_type(self.head)

    def chunks(self) -> Iterator[bytes]:
        """The body in chunks of at most 1 MiB, read as they are sent."""
        yield self.head
        if self.rest is None:
            return
        while chunk := self.rest.read(CHUNK):
            yield chunk

    async def achunks(self) -> AsyncIterator[bytes]:
        """``chunks`` for the async client: each read runs on a thread, off the event loop."""
        yield self.head
        if self.rest is None:
            return
        while chunk := await asyncio.to_thread(self.rest.read, CHUNK):
            yield chunk

    def close(self) -> None:
        """Close the file if it was opened from a path (a caller's file stays open)."""
        if self.owned and self.rest is not None:
            self.rest.close()


def open_upload(source: ArchiveSource) -> Upload:
    """An ``Upload`` of a path, bytes or a binary file (read from its current position).

    Example::

        up = open_upload("digits.zip")
        try:
            client.post(url, content=up.chunks(), headers={"Content-Type": up.content_type})
        finally:
            up.close()
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return Upload(data, None, len(data))
    if isinstance(source, str | Path):
        f: BinaryIO = Path(source).open("rb")  # noqa: SIM115 (closed by Upload.close)
        try:
            return _from_file(f, owned=True)
        except BaseException:
            f.close()
            raise
    return _from_file(source, owned=False)


def _from_file(f: BinaryIO, *, owned: bool) -> Upload:
    size = None
    try:
        if f.seekable():
            start = f.tell()
            size = f.seek(0, io.SEEK_END) - start
            f.seek(start)
    except (OSError, ValueError):  # a pipe or socket that claims otherwise: sent chunked instead
        size = None
    head = f.read(_HEAD)
    if not isinstance(head, bytes):
        raise TypeError("archive: a file opened in binary mode ('rb') is needed")
    return Upload(head, f, size, owned=owned)


def _split_text(split: Split) -> str:
    # six decimals at most: the server takes up to 8 characters per share (1/3 -> 0.333333)
    return ",".join(format(float(x), ".6f").rstrip("0").rstrip(".") for x in split)


def upload_timeout(base: httpx.Timeout) -> httpx.Timeout:
    """``base`` with a read timeout of at least ``UPLOAD_READ_S`` (none stays none)."""
    read = None if base.read is None else max(base.read, UPLOAD_READ_S)
    write = None if base.write is None else max(base.write, UPLOAD_READ_S)
    return httpx.Timeout(connect=base.connect, read=read, write=write, pool=base.pool)


def push_dataset_call(
    name: str, upload: Upload, split: Split, seed: int, description: str, timeout: httpx.Timeout
) -> Call:
    """``POST /v1/datasets/{name}`` (201 a new version, 200 the same one again); each client
    adds the body (``content``) from ``upload`` in its own way."""
    params: dict[str, Any] = {"split": _split_text(split), "seed": seed}
    if description:
        params["description"] = description
    headers = {"Content-Type": upload.content_type}
    if upload.size is not None:  # known: the server refuses an oversized body before reading it
        headers["Content-Length"] = str(upload.size)
    kwargs = {
        "url": f"/v1/datasets/{_segment(name)}",
        "params": params,
        "headers": headers,
        "timeout": upload_timeout(timeout),
    }
    return Call("POST", kwargs, DatasetPushResult)


def list_datasets_call() -> Call:
    """``GET /v1/datasets``."""
    return Call("GET", {"url": "/v1/datasets"}, DatasetList)


def get_dataset_call(name: str) -> Call:
    """``GET /v1/datasets/{name}`` (its versions, newest first)."""
    return Call("GET", {"url": f"/v1/datasets/{_segment(name)}"}, DatasetDetail)


def get_dataset_version_call(name: str, version: int) -> Call:
    """``GET /v1/datasets/{name}/versions/{version}``."""
    return Call("GET", {"url": f"/v1/datasets/{_segment(name)}/versions/{int(version)}"}, DatasetVersionInfo)


# -- jobs ------------------------------------------------------------------------------------------
def _job_url(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{_segment(job_id)}{suffix}"


def config_fields(config: TrainConfig | dict[str, Any] | None) -> dict[str, Any] | None:
    """The configuration to send: only the fields given (the server's defaults apply to the
    rest); a mapping as is, unchecked, so the server names a bad field."""
    if config is None:
        return None
    if isinstance(config, TrainConfig):
        return config.model_dump(mode="json", exclude_unset=True)
    return dict(config)


def train_call(
    dataset: str, model: str, config: TrainConfig | dict[str, Any] | None = None, description: str = ""
) -> Call:
    """``POST /v1/jobs`` (202, the queued job)."""
    body: dict[str, Any] = {"dataset": dataset, "model": model}
    fields = config_fields(config)
    if fields is not None:
        body["config"] = fields
    if description:
        body["description"] = description
    return Call("POST", {"url": "/v1/jobs", "json": body}, JobInfo)


def list_jobs_call(state: list[str] | None = None, limit: int = 100) -> Call:
    """``GET /v1/jobs`` (newest first; ``state`` repeated once per state)."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = list(state)
    return Call("GET", {"url": "/v1/jobs", "params": params}, JobList)


def get_job_call(job_id: str) -> Call:
    """``GET /v1/jobs/{id}``."""
    return Call("GET", {"url": _job_url(job_id)}, JobInfo)


def cancel_job_call(job_id: str) -> Call:
    """``POST /v1/jobs/{id}/cancel``."""
    return Call("POST", {"url": _job_url(job_id, "/cancel")}, JobInfo)


def job_log_call(job_id: str) -> Call:
    """``GET /v1/jobs/{id}/log`` (text; the clients return the body as a string)."""
    return Call("GET", {"url": _job_url(job_id, "/log")}, None)


def job_plot_call(job_id: str, plot: str) -> Call:
    """``GET /v1/jobs/{id}/plots/{plot}.png`` (``confusion`` or ``curves``; the clients return bytes)."""
    return Call("GET", {"url": _job_url(job_id, f"/plots/{_segment(plot)}.png")}, None)


def events_timeout(base: httpx.Timeout) -> httpx.Timeout:
    """``base`` with a read timeout of ``EVENT_GAP_S``: the longest silence a live stream has."""
    return httpx.Timeout(connect=base.connect, read=EVENT_GAP_S, write=base.write, pool=base.pool)


def job_events_call(job_id: str, after: int, last_event_id: int | None, timeout: httpx.Timeout) -> Call:
    """``GET /v1/jobs/{id}/events`` from the event after ``after``; on a reconnect,
    ``Last-Event-ID`` names the last event received (the server prefers it to ``after``)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    kwargs = {
        "url": _job_url(job_id, "/events"),
        "params": {"after": after},
        "headers": headers,
        "timeout": events_timeout(timeout),
    }
    return Call("GET", kwargs, None)


# -- the event stream ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event: its type (``message`` when unnamed), data and id."""

    event: str
    data: str
    id: str | None


@dataclass
class SseParser:
    """Server-Sent Events from a stream's lines, one ``feed`` per line (WHATWG rules: a blank
    line ends an event, ``:`` starts a comment such as the server's pings, one space after
    the field's colon is dropped, ``data`` lines join with newlines, unknown fields are skipped).

    Example::

        p = SseParser()
        [p.feed(line) for line in ["event: state", "id: 3", 'data: {"a": 1}', ""]][-1]
        # SseEvent(event='state', data='{"a": 1}', id='3')
    """

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        """Take one line (without its line break); returns the event a blank line completes."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:  # a blank line after comments, or an event without data: nothing to deliver
            return None
        return SseEvent(event or "message", "\n".join(data), self._id)  # the id persists, as in browsers


def job_event(sse: SseEvent) -> JobEventInfo:
    """The job event an SSE event carries (``ImaasError`` for data that is not one)."""
    try:
        return JobEventInfo.model_validate_json(sse.data)
    except ValidationError:
        raise ImaasError(f"job events: the server sent {sse.event!r} data that is not a job event") from None


def is_final(event: JobEventInfo) -> bool:
    """Whether ``event`` is the state change that ends its job."""
    return event.kind == "state" and event.data.get("state") in FINAL_STATES


class Follow:
    """Where one reading of a job's event stream stands: the last event seen, whether the
    job's end was seen, and how many reconnects are left (``MAX_RECONNECTS`` in a row; an
    event that arrives refills them). The clients run the I/O loop and ask it what next.

    Example::

        follow = Follow("job_0123456789ab", after=0)
        while True:
            ...  # connect with follow.call(timeout), follow.connected(), follow.seen(event) per event
            if not follow.again(error):  # error: the TransportError that ended it, or None
                break
    """

    def __init__(self, job_id: str, after: int = 0) -> None:
        self.job_id = job_id
        self.after = after
        self.cursor: int | None = None  # the last event's seq
        self.finished = False
        self._tries = MAX_RECONNECTS
        self._ever_connected = False
        self._events_this_connection = 0

    def call(self, timeout: httpx.Timeout) -> Call:
        """The request of the next connection."""
        self._events_this_connection = 0
        return job_events_call(self.job_id, self.after, self.cursor, timeout)

    def connected(self) -> None:
        """The server accepted the stream."""
        self._ever_connected = True

    def seen(self, event: JobEventInfo) -> None:
        """An event was received."""
        self.cursor = event.seq
        self._events_this_connection += 1
        self._tries = MAX_RECONNECTS
        if is_final(event):
            self.finished = True

    def again(self, error: TransportError | None) -> bool:
        """After a connection ended: whether to reconnect. ``error`` is the transport failure
        that ended it (None: the server closed the stream).

        The server closes the stream only once the job is over and every event was sent, so
        a clean close ends the reading when it brought the final state or no event at all
        (a finished job with nothing after the cursor). A close mid-stream (a proxy) or a
        dropped connection reconnects; the first connection's failure, or more than
        ``MAX_RECONNECTS`` in a row without an event, is raised.
        """
        if self.finished:
            return False
        if error is None and self._events_this_connection == 0:
            return False
        if error is not None and not self._ever_connected:
            raise error
        if self._tries <= 0:
            if error is not None:
                raise error
            raise TransportError(f"the event stream of job {self.job_id} kept ending before the job did")
        self._tries -= 1
        return True
