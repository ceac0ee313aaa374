"""Hostile dataset uploads and job submissions against a real server (issue 11, "Bad input and faults").

Every bad upload gets a 4xx problem with its stable code, never a 5xx; the server keeps
serving (a good upload works right after); and nothing of the refused upload is left: no
dataset version, no spooled or staged file. Uploads that are only partly bad (labels naming
absent files, non-images, a truncated PNG) are accepted with the report saying what was left
out and why. A key limited to some names sees only the datasets and jobs of those names.
Hypothesis posts random bytes and mutated small archives and checks only that the answer is
a 2xx or a 4xx problem.
"""

from __future__ import annotations

import io
import socket
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from imaas.settings import DatasetSettings, Settings
from tests.conftest import RunningServer
from tests.hostile import examples, image_bytes, rarely, texts

# Pillow (in the server, in this process) warns about the broken TIFF tags some inputs are made of.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MIB = 1 << 20
ABSENT_JOB = "job_000000000000"


# -- archives made here ---------------------------------------------------------------------------


def noise_png(seed: int, size: int = 20) -> bytes:
    """A PNG of random pixels: never blank, never a duplicate of another seed's."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def folders(counts: dict[str, int], seed: int = 0) -> dict[str, bytes]:
    """An ImageFolder tree: ``counts[label]`` distinct noise images in each class folder."""
    return {
        f"{label}/{i}.png": noise_png(seed * 1000 + 100 * c + i)
        for c, (label, n) in enumerate(sorted(counts.items()))
        for i in range(n)
    }


GOOD = {"cat": 3, "dog": 3}  # the fewest per class that the default 80/10/10 split takes


def zip_of(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def tar_of(entries: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_with_symlink() -> bytes:
    """A good tree plus an entry whose mode (in ``external_attr``) says symbolic link."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in folders(GOOD).items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("cat/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


def tar_with_symlink() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in folders(GOOD).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cat/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    return buf.getvalue()


class Zeros(io.RawIOBase):
    """``n`` zero bytes as a stream, so a bomb is built without holding it in memory."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def zip_bomb(path: Path, size: int = 200 * MIB) -> bytes:
    """One member of ``size`` zero bytes, deflated (about 1000:1), written in 1 MiB steps."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("cat/zeros.png", "w") as f:
        chunk = bytes(MIB)
        for _ in range(size // MIB):
            f.write(chunk)
    return path.read_bytes()


def tar_gz_bomb(path: Path, size: int = 200 * MIB) -> bytes:
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo("cat/zeros.png")
        info.size = size
        tf.addfile(info, io.BufferedReader(Zeros(size)))
    return path.read_bytes()


def labels_csv(rows: list[tuple[str, str]]) -> bytes:
    return ("file,label\n" + "".join(f"{f},{label}\n" for f, label in rows)).encode()


# -- servers ---------------------------------------------------------------------------------------


def _start(home: Path, datasets: DatasetSettings) -> RunningServer:
    return RunningServer(Settings(home=home, datasets=datasets)).start()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Default limits, except members may be large, so a bomb is refused by its ratio alone."""
    server = _start(tmp_path_factory.mktemp("ds-hostile") / "home", DatasetSettings(max_member_mib=512))
    r = httpx.post(f"{server.url}/v1/datasets/good", content=zip_of(folders(GOOD)), headers=server.headers)
    assert r.status_code == 201, r.text
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Archives may unpack to 1 MiB at most, and uploads be 4 MiB."""
    server = _start(tmp_path_factory.mktemp("ds-small") / "home", DatasetSettings(max_total_mib=1, max_upload_mib=4))
    yield server
    server.stop()


def post(server: RunningServer, name: str, body: bytes, **params: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/datasets/{name}",
        content=body,
        params=params,
        headers={**server.headers, "content-type": "application/zip"},
        timeout=60,
    )


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The problem body of ``r``, after checking its status, media type and code."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body: dict[str, Any] = r.json()
    assert (body["status"], body["code"]) == (status, code), body
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def left_nothing(server: RunningServer, name: str) -> None:
    """No version of ``name``, and no spooled upload or staged artifact left on disk."""
    r = httpx.get(f"{server.url}/v1/datasets/{name}", headers=server.headers)
    problem(r, 404, "dataset_not_found")
    listed = httpx.get(f"{server.url}/v1/datasets", headers=server.headers).json()["datasets"]
    assert name not in {d["name"] for d in listed}
    home = server.settings.home
    leftovers = [*(home / "uploads").glob("*"), *(home / "artifacts" / "tmp").glob("*")]
    assert leftovers == []


def still_serving(server: RunningServer) -> None:
    """A good upload right after is stored (200: this server has had it before)."""
    r = post(server, "canary", zip_of(folders(GOOD, seed=7)))
    assert r.status_code in (200, 201), r.text
    assert r.json()["summary"]["classes"] == ["cat", "dog"]


# -- refused uploads -------------------------------------------------------------------------------

REFUSED: list[tuple[str, bytes, dict[str, Any], int, str, str]] = [
    # id, body, query, status, code, words the detail must hold
    (
        "zip-slip-dotdot",
        zip_of({**folders(GOOD), "../evil.png": noise_png(1)}),
        {},
        422,
        "invalid_archive",
        "'../evil.png'",
    ),
    ("zip-slip-absolute", zip_of({**folders(GOOD), "/etc/x.png": noise_png(1)}), {}, 422, "invalid_archive", "/etc/x"),
    ("tar-slip-dotdot", tar_of({**folders(GOOD), "cat/../../x.png": noise_png(1)}), {}, 422, "invalid_archive", ".."),
    ("zip-symlink", zip_with_symlink(), {}, 422, "invalid_archive", "symbolic link"),
    ("tar-symlink", tar_with_symlink(), {}, 422, "invalid_archive", "symbolic link"),
    ("not-an-archive", b"these bytes are neither a zip nor a tar\n" * 50, {}, 422, "invalid_archive", ""),
    ("empty-body", b"", {}, 422, "invalid_archive", ""),
    ("one-class", zip_of(folders({"cat": 6})), {}, 422, "invalid_dataset", "2 classes"),
    ("class-too-small", zip_of(folders({"cat": 3, "dog": 2})), {}, 422, "invalid_dataset", "'dog' has 2 images"),
    ("split-sums-past-1", zip_of(folders(GOOD)), {"split": "0.5,0.5,0.5"}, 422, "invalid_field", "split"),
    ("split-not-numbers", zip_of(folders(GOOD)), {"split": "a,b,c"}, 422, "invalid_field", "split"),
    ("split-two-parts", zip_of(folders(GOOD)), {"split": "0.9,0.1"}, 422, "invalid_field", "split"),
]


@pytest.mark.parametrize(("case", "body", "query", "status", "code", "words"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_bad_upload_is_refused_and_leaves_nothing(
    site: RunningServer, case: str, body: bytes, query: dict[str, Any], status: int, code: str, words: str
) -> None:
    found = problem(post(site, case, body, **query), status, code)
    assert words in found["detail"]
    if code == "invalid_field":
        assert found["detail"].startswith("split:")
    left_nothing(site, case)
    still_serving(site)


def test_a_class_too_small_is_named(site: RunningServer) -> None:
    found = problem(post(site, "small-class", zip_of(folders({"ant": 4, "bee": 2}))), 422, "invalid_dataset")
    assert (found["label"], found["count"], found["needs"]) == ("bee", 2, 3)
    left_nothing(site, "small-class")
    # three are enough: one image in each split, whatever the fractions round to
    r = post(site, "small-class", zip_of(folders({"ant": 4, "bee": 3})))
    assert r.status_code == 201, r.text
    counts = r.json()["summary"]["counts"]
    assert [counts[s]["bee"] for s in ("train", "validation", "test")] == [1, 1, 1]


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_compression_bomb_is_refused_by_its_ratio(site: RunningServer, tmp_path: Path, kind: str) -> None:
    body = zip_bomb(tmp_path / "bomb.zip") if kind == "zip" else tar_gz_bomb(tmp_path / "bomb.tar.gz")
    assert len(body) < 2 * MIB  # ~200 KB that claims 200 MB: far past the ratio limit of 100
    name = f"bomb-{kind.replace('.', '-')}"
    found = problem(post(site, name, body), 413, "archive_too_large")
    assert found["limit"] == "max_ratio"
    left_nothing(site, name)
    still_serving(site)


def test_an_archive_past_the_total_size_is_refused(small: RunningServer) -> None:
    blob = np.random.default_rng(5).bytes(3 * MIB // 2)  # incompressible: the ratio stays near 1
    body = zip_of({**folders(GOOD), "cat/blob.bin": blob}, method=zipfile.ZIP_STORED)
    assert MIB < len(body) < 4 * MIB  # the upload itself is within max_upload_mib
    found = problem(post(small, "too-big", body), 413, "archive_too_large")
    assert found["limit"] == "max_total_bytes"
    left_nothing(small, "too-big")
    still_serving(small)


def test_a_declared_body_past_the_upload_limit_is_refused_unread(small: RunningServer) -> None:
    """Only the headers are sent: a 413 that comes back proves the body was never waited for."""
    head = (
        "POST /v1/datasets/huge HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{small.port}\r\n"
        f"Authorization: Bearer {small.key}\r\n"
        "Content-Type: application/zip\r\n"
        f"Content-Length: {5 * MIB}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", small.port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"413", answer[:300]
    assert b"payload_too_large" in rest.partition(b"\r\n\r\n")[2]
    left_nothing(small, "huge")
    still_serving(small)


def test_a_streamed_body_past_the_upload_limit_is_refused(small: RunningServer) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        for _ in range(5):
            yield bytes(MIB)

    try:
        r = httpx.post(f"{small.url}/v1/datasets/streamed", content=chunks(), headers=small.headers, timeout=30)
    except httpx.TransportError:  # the server may close before the client has sent everything
        pass
    else:
        problem(r, 413, "payload_too_large")
    left_nothing(small, "streamed")
    still_serving(small)


# -- accepted with a report ------------------------------------------------------------------------


def test_labels_naming_absent_files_are_reported(site: RunningServer) -> None:
    images = {f"img/{i}.png": noise_png(500 + i) for i in range(6)}
    rows = [(name, "cat" if i < 3 else "dog") for i, name in enumerate(images)]
    rows += [("img/gone-1.png", "cat"), ("img/gone-2.png", "dog")]
    r = post(site, "labelled", zip_of({"labels.csv": labels_csv(rows), **images}))
    assert r.status_code == 201, r.text
    report = r.json()["report"]
    assert report["missing_files"] == ["img/gone-1.png", "img/gone-2.png"]
    assert report["class_counts"] == {"cat": 3, "dog": 3}
    assert report["layout"] == "labels-file"


def test_non_images_and_a_truncated_png_are_dropped_by_reason(site: RunningServer) -> None:
    png = noise_png(42, size=64)
    entries = {
        **folders(GOOD),
        "cat/notes.txt": b"remember to feed the cat\n",
        "dog/archive.bin": np.random.default_rng(1).bytes(300),
        "dog/broken.png": png[: len(png) // 2],
    }
    r = post(site, "messy", zip_of(entries))
    assert r.status_code == 201, r.text
    body = r.json()
    dropped = body["report"]["dropped"]
    assert dropped["by_reason"] == {"corrupt": 1, "not_image": 2}
    assert {d["name"]: d["reason"] for d in dropped["items"]} == {
        "cat/notes.txt": "not_image",
        "dog/archive.bin": "not_image",
        "dog/broken.png": "corrupt",
    }
    assert body["report"]["kept"] == 6
    assert body["summary"]["images"] == 6
    stored = httpx.get(f"{site.url}/v1/datasets/messy/versions/{body['version']}", headers=site.headers)
    assert stored.json()["report"]["dropped"]["by_reason"] == {"corrupt": 1, "not_image": 2}


# -- job submissions -------------------------------------------------------------------------------


def submit(server: RunningServer, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/jobs", json=body, headers=headers or server.headers)


def job_ids(server: RunningServer, headers: dict[str, str] | None = None) -> set[str]:
    r = httpx.get(f"{server.url}/v1/jobs", params={"limit": 1000}, headers=headers or server.headers)
    assert r.status_code == 200, r.text
    return {j["id"] for j in r.json()["jobs"]}


@pytest.mark.parametrize(
    ("dataset", "detail"),
    [("nope", "no dataset named 'nope'"), ("good@99", "dataset 'good' has no version 99")],
)
def test_a_job_on_a_dataset_that_is_not_there_is_404(site: RunningServer, dataset: str, detail: str) -> None:
    before = job_ids(site)
    found = problem(submit(site, {"dataset": dataset, "model": "m"}), 404, "dataset_not_found")
    assert found["detail"] == detail
    assert job_ids(site) == before


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"epochs": 0}, "config.epochs"),
        ({"lr": -1}, "config.lr"),
        ({"optimizer": "rmsprop"}, "config.optimizer"),
        ({"epoch": 5}, "config.epoch"),
        ({"augment": {"rotation_deg": "lots"}}, "config.augment.rotation_deg"),
    ],
)
def test_bad_hyperparameters_are_422_naming_the_field(site: RunningServer, config: dict[str, Any], field: str) -> None:
    before = job_ids(site)
    found = problem(submit(site, {"dataset": "good", "model": "m", "config": config}), 422, "invalid_field")
    assert found["detail"].startswith(f"{field}: ")
    assert [e["field"] for e in found["errors"]] == [field]
    assert job_ids(site) == before
    assert submit(site, {"dataset": "good", "model": "m", "config": {"epochs": 1}}).status_code == 202


# -- tenancy ---------------------------------------------------------------------------------------


def test_a_key_limited_to_team_a_sees_only_team_a(site: RunningServer) -> None:
    url, admin = site.url, site.headers
    assert post(site, "other", zip_of(folders(GOOD, seed=3))).status_code == 201
    assert post(site, "team-a-ds", zip_of(folders(GOOD, seed=4))).status_code == 201
    theirs = submit(site, {"dataset": "other", "model": "other-model", "config": {"epochs": 1}})
    assert theirs.status_code == 202, theirs.text
    job = theirs.json()["id"]
    r = httpx.post(
        f"{url}/v1/keys",
        json={"name": "team-a", "scopes": ["datasets:read", "datasets:write", "jobs"], "models": ["team-a-*"]},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    key = {"authorization": f"Bearer {r.json()['secret']}"}

    listed = httpx.get(f"{url}/v1/datasets", headers=key).json()["datasets"]
    assert [d["name"] for d in listed] == ["team-a-ds"]
    assert httpx.get(f"{url}/v1/datasets/team-a-ds", headers=key).status_code == 200
    hidden = problem(httpx.get(f"{url}/v1/datasets/other", headers=key), 404, "dataset_not_found")
    absent = problem(httpx.get(f"{url}/v1/datasets/nobody", headers=admin), 404, "dataset_not_found")
    assert hidden["detail"].replace("'other'", "'nobody'") == absent["detail"]
    problem(httpx.get(f"{url}/v1/datasets/other/versions/1", headers=key), 404, "dataset_not_found")

    pushed = httpx.post(f"{url}/v1/datasets/other", content=zip_of(folders(GOOD, seed=5)), headers=key)
    problem(pushed, 403, "model_forbidden")
    assert httpx.get(f"{url}/v1/datasets/other", headers=admin).json()["versions"][0]["version"] == 1
    assert len(httpx.get(f"{url}/v1/datasets/other", headers=admin).json()["versions"]) == 1
    assert httpx.post(f"{url}/v1/datasets/team-a-new", content=zip_of(folders(GOOD)), headers=key).status_code == 201

    hidden_job = problem(httpx.get(f"{url}/v1/jobs/{job}", headers=key), 404, "job_not_found")
    absent_job = problem(httpx.get(f"{url}/v1/jobs/{ABSENT_JOB}", headers=admin), 404, "job_not_found")
    assert hidden_job["detail"].replace(job, ABSENT_JOB) == absent_job["detail"]
    for suffix in ("/log", "/events", "/plots/curves.png"):
        problem(httpx.get(f"{url}/v1/jobs/{job}{suffix}", headers=key), 404, "job_not_found")
    problem(httpx.post(f"{url}/v1/jobs/{job}/cancel", headers=key), 404, "job_not_found")
    assert httpx.get(f"{url}/v1/jobs/{job}", headers=admin).json()["state"] == "queued"
    assert job not in job_ids(site, key)
    assert job in job_ids(site)

    problem(submit(site, {"dataset": "team-a-ds", "model": "other-model"}, key), 403, "model_forbidden")
    problem(submit(site, {"dataset": "other", "model": "team-a-m"}, key), 404, "dataset_not_found")
    own = submit(site, {"dataset": "team-a-ds", "model": "team-a-m", "config": {"epochs": 1}}, key)
    assert own.status_code == 202, own.text
    assert own.json()["id"] in job_ids(site, key)


# -- properties ------------------------------------------------------------------------------------

MAGIC = [b"", b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\x00", b"ustar"]
SEEDS = {
    "zip": zip_of(folders(GOOD, seed=11)),
    "zip-stored": zip_of(folders(GOOD, seed=12), method=zipfile.ZIP_STORED),
    "tar": tar_of(folders(GOOD, seed=13)),
    "tar.gz": tar_of(folders(GOOD, seed=14), mode="w:gz"),
}


HOSTILE_NAMES = [
    "../up.png",
    "/abs.png",
    "C:/drive.png",
    "cat\\..\\..\\up.png",
    "cat/./dot.png",
    "cat//double.png",
    "__MACOSX/cat/._0.png",
    "cat/.hidden.png",
    "cat/0.png",  # a duplicate of an entry already there
    "dog",
    "cat/",
    "./",
    "cat/\u202eevil.png",
    "cat/ctrl\x07.png",
    "labels.csv",
]


@st.composite
def edited_archives(draw: st.DrawFn) -> bytes:
    """A small valid tree with a few entries renamed (hostile names), their bytes replaced by
    broken images (``tests.hostile.image_bytes``) or labels files of any text, then packed
    as zip or tar: each archive is well formed, so the cleaning and the split see the faults."""
    entries = list(folders({"cat": 5, "dog": 5}, seed=20).items())
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["name", "data", "labels", "drop"]))
        at = draw(st.integers(0, len(entries) - 1)) if entries else 0
        if op == "name" and entries:
            name = draw(st.sampled_from(HOSTILE_NAMES) | texts.map(lambda t: f"cat/{t}.png"))
            entries[at] = (name, entries[at][1])
        elif op == "data" and entries:
            entries[at] = (entries[at][0], draw(image_bytes()))
        elif op == "labels":
            text = draw(st.text(alphabet="cat,dog.png/0123 \n\"", max_size=80) | texts)
            entries.append((draw(st.sampled_from(["labels.csv", "labels.json", "cat/labels.csv"])), text.encode()))
        elif entries:
            del entries[at]
    kind = draw(st.sampled_from(["zip", "zip-stored", "tar", "tar.gz"]))
    if kind.startswith("zip"):
        buf = io.BytesIO()
        method = zipfile.ZIP_STORED if kind == "zip-stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(buf, "w", method) as zf, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate names on purpose
            for name, data in entries:
                zf.writestr(zipfile.ZipInfo(name), data)
        return buf.getvalue()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tar.gz" else "w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@st.composite
def mutated_archives(draw: st.DrawFn) -> bytes:
    """A small valid archive with up to four byte ranges overwritten, inserted, deleted or cut off."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "overwrite", "overwrite", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            del data[at:]
        elif op == "overwrite":
            new = rarely(draw, st.binary(min_size=1, max_size=4), st.sampled_from([b"\xff\xff\xff\xff", b"\x00" * 4]))
            data[at : at + len(new)] = new
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


def answered_well(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/problem+json"
        assert isinstance(r.json()["code"], str)
    else:
        assert r.status_code in (200, 201), r.text


@examples(40)
@given(body=st.sampled_from(MAGIC).flatmap(lambda m: st.binary(max_size=512).map(lambda b: m + b)))
def test_random_bytes_never_get_a_5xx(site: RunningServer, body: bytes) -> None:
    answered_well(post(site, "x", body))


@examples(40)
@given(body=mutated_archives())
def test_mutated_archives_never_get_a_5xx(site: RunningServer, body: bytes) -> None:
    answered_well(post(site, "x", body))


@examples(40)
@given(body=edited_archives())
def test_archives_with_hostile_entries_never_get_a_5xx(site: RunningServer, body: bytes) -> None:
    answered_well(post(site, "x", body))


def test_after_the_properties_the_server_still_serves(site: RunningServer) -> None:
    assert httpx.get(f"{site.url}/healthz").status_code == 200
    still_serving(site)
