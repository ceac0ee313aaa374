"""The training pipeline end to end in one process: a generated dataset is uploaded, a job
trains ``seed-cnn`` on it, and the version it registers is served over HTTP with the same
numbers its own ONNX file gives when fed the training statistics by hand."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from imaas.domain import JobState, Principal
from imaas.errors import InvalidField, ModelNotFound
from imaas.jobs.process import build_worker
from imaas.services.container import Services, build_services
from imaas.settings import Settings
from tests.conftest import RunningServer
from tests.factories import pattern_dataset_zip, pattern_image

CALLER = Principal(key_id=None, name="test")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home"))
    yield svc
    asyncio.run(svc.close())


def run_job(svc: Services, dataset: str, model: str, config: dict[str, Any]) -> Any:
    worker = build_worker(svc, name="test-worker")
    return worker.run(svc.training.submit(CALLER, dataset, model, config, claim_for=worker.name))


def push(svc: Services, name: str, archive: bytes) -> Any:
    version, created, _report = svc.datasets.push(name, io.BytesIO(archive), principal=CALLER)
    assert created
    return version


def test_a_trained_version_is_registered_with_lineage_and_served_as_training_saw_it(
    services: Services, serve: Any
) -> None:
    ds = push(services, "stripes", pattern_dataset_zip(classes=3, per_class=20))
    done = run_job(services, ds.ref, "stripes-cnn", {"epochs": 3, "seed": 1})
    assert done.state is JobState.SUCCEEDED, done.error

    number = done.result["version"]
    version = services.models.get_version("stripes-cnn", number)
    model = services.models.get_model("stripes-cnn")
    assert model.aliases == {"staging": number}  # never production by itself
    assert (version.dataset, version.job_id, version.source) == (ds.ref, done.id, f"job:{done.id}")
    assert version.manifest.labels == ["class-0", "class-1", "class-2"]
    assert version.manifest.input.size == (28, 28)
    assert version.manifest.input.color == "L"
    assert list(version.manifest.preprocess.mean) == pytest.approx(ds.summary["mean"])
    assert version.metrics["lineage"]["dataset"] == ds.ref
    assert version.metrics["training"]["config"]["epochs"] == 3
    assert version.metrics["test"]["confusion"]
    assert sum(map(sum, version.metrics["test"]["confusion"])) == 6
    assert version.metrics["onnx_parity_max_abs_diff"] < 1e-4

    # what the server answers for an image equals the ONNX file run by hand on (x/255 - mean)/std
    image = pattern_image(1, 999)
    pixels = np.asarray(Image.open(io.BytesIO(image)), dtype=np.float32)[None, None] / 255
    mean, std = ds.summary["mean"][0], ds.summary["std"][0]
    session = ort.InferenceSession(str(services.artifacts.open_path(version.sha256)))
    logits = session.run(None, {"input": ((pixels - mean) / std).astype(np.float32)})[0][0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()

    server: RunningServer = serve(Settings(home=services.settings.home))
    r = httpx.post(
        f"{server.url}/v1/models/stripes-cnn:staging:predict",
        content=image,
        headers={**server.headers, "content-type": "image/png"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == number
    top = r.json()["results"][0]["predictions"][0]
    best = int(np.argmax(expected))
    assert top["label"] == f"class-{best}"
    assert top["score"] == pytest.approx(float(expected[best]), abs=1e-4)


def test_what_cannot_fit_is_refused_at_submit_naming_the_field(services: Services) -> None:
    ds = push(services, "refused", pattern_dataset_zip(classes=2, per_class=10))
    with pytest.raises(InvalidField, match=r"^input_size: seed-cnn needs images of at least 18x18"):
        services.training.submit(CALLER, ds.ref, "m", {"input_size": [8, 8]})
    with pytest.raises(InvalidField, match=r"^config: this job would need about [0-9,]+ MiB"):
        services.training.submit(CALLER, ds.ref, "m", {"input_size": [1024, 1024], "batch_size": 4096})
    assert services.training.list_jobs(CALLER) == []


def test_rgb_64px_images_size_the_seed_cnn_for_them(services: Services) -> None:
    ds = push(services, "rgb", pattern_dataset_zip(classes=2, per_class=10, size=(64, 64), mode="RGB"))
    assert ds.summary["input"] == {"size": [64, 64], "channels": 3, "color": "RGB"}
    done = run_job(services, ds.ref, "rgb-cnn", {"epochs": 1})
    assert done.state is JobState.SUCCEEDED, done.error
    manifest = services.models.get_version("rgb-cnn", done.result["version"]).manifest
    assert (manifest.input.size, manifest.input.color, len(manifest.preprocess.mean)) == ((64, 64), "RGB", 3)


def test_a_job_that_fails_leaves_no_version_and_says_why(services: Services) -> None:
    ds = push(services, "small", pattern_dataset_zip(classes=2, per_class=10))
    worker = build_worker(services, name="test-worker")
    job = services.training.submit(CALLER, ds.ref, "never-made", {"epochs": 1}, claim_for=worker.name)
    # the store loses the dataset's archive between the submit and the run
    services.artifacts.path(ds.sha256).write_bytes(b"rotten")  # type: ignore[attr-defined]
    done = worker.run(job)
    assert done.state is JobState.FAILED
    assert done.error is not None
    assert done.error.startswith("artifact_corrupt")
    with pytest.raises(ModelNotFound):
        services.models.get_model("never-made")
    states = [e.data.get("state") for e in services.training.jobs.events(done.id) if e.kind == "state"]
    assert states == ["queued", "running", "failed"]


def test_cluster_mode_a_worker_elsewhere_trains_from_the_bucket(
    tmp_path: Path, postgres_url: str, s3_bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL and an S3 bucket: the dataset uploaded through one process is read by a
    worker with an empty local cache, and the version it registers is read back by the first."""
    from imaas.settings import S3Settings
    from tests.s3server import REGION

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")

    def cluster(home: Path) -> Settings:
        return Settings(
            home=home,
            database_url=postgres_url,
            artifacts_url=f"s3://{s3_bucket}/imaas",
            s3=S3Settings(endpoint_url=s3_endpoint, region=REGION),
        )

    front, back = build_services(cluster(tmp_path / "front")), build_services(cluster(tmp_path / "worker"))
    try:
        ds = push(front, "stripes", pattern_dataset_zip(classes=2, per_class=10))
        job = front.training.submit(CALLER, ds.ref, "stripes-cnn", {"epochs": 1})
        worker = build_worker(back, name="elsewhere")
        done = worker.run_once()
        assert done is not None
        assert done.id == job.id
        assert done.state is JobState.SUCCEEDED, done.error
        version = front.models.get_version("stripes-cnn", done.result["version"])
        # the front process never had the file: it comes from the bucket, whole
        assert not list((tmp_path / "front").rglob(f"*{version.sha256}*"))
        assert front.artifacts.open_path(version.sha256).stat().st_size == version.size_bytes
    finally:
        asyncio.run(front.close())
        asyncio.run(back.close())


def test_a_nul_in_a_description_is_a_422_on_postgresql_too(tmp_path: Path, postgres_url: str) -> None:
    svc = build_services(Settings(home=tmp_path / "home", database_url=postgres_url))
    try:
        archive = pattern_dataset_zip(classes=2, per_class=10)
        with pytest.raises(InvalidField, match=r"^description: must not contain NUL"):
            svc.datasets.push("nul", io.BytesIO(archive), principal=CALLER, description="a\x00b")
        ds = push(svc, "nul", archive)
        with pytest.raises(InvalidField, match=r"^description: must not contain NUL"):
            svc.training.submit(CALLER, ds.ref, "m", {"epochs": 1}, description="a\x00b")
        assert svc.training.list_jobs(CALLER) == []
    finally:
        asyncio.run(svc.close())


def test_a_large_photo_in_a_small_image_dataset_trains_rather_than_failing_the_job(services: Services) -> None:
    """Serving refuses a PNG hundreds of times larger than the model reads (a cheap request
    made costly); a dataset the upload accepted is decoded by its job whatever the ratio."""
    ys, xs = np.mgrid[0:2100, 0:2100]
    big = io.BytesIO()
    Image.fromarray(((xs + ys) % 256).astype(np.uint8), mode="L").save(big, format="PNG")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "a") as z:
        with zipfile.ZipFile(io.BytesIO(pattern_dataset_zip(classes=2, per_class=10, size=(32, 32)))) as base:
            for info in base.infolist():
                z.writestr(info.filename, base.read(info))
        z.writestr("patterns/class-0/big.png", big.getvalue())
    ds = push(services, "mixed", archive.getvalue())
    assert ds.summary["input"]["size"] == [32, 32]
    assert ds.summary["images"] == 21
    done = run_job(services, ds.ref, "mixed-cnn", {"epochs": 1})
    assert done.state is JobState.SUCCEEDED, done.error
