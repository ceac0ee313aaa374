"""Test accuracy of ``mobilenet-v2-transfer`` (and ``seed-cnn`` for comparison) on small photo
datasets assembled from images that ship with scikit-image, trained through the platform's
own pipeline (dataset upload, cleaning, split, job, export, evaluation, registration).

Datasets (nothing is downloaded):

- ``faces``: ``skimage.data.lfw_subset()``, 100 face crops and 100 non-face crops from
  Labeled Faces in the Wild, 25x25 grayscale (two classes, 100 images each).
- ``textures``: the brick, grass and gravel photos (512x512 grayscale), each cut into an 8x8
  grid of non-overlapping 64x64 tiles (three classes, 64 images each). Tiles of one photo
  share its texture, so this measures telling textures apart, not generalising to new photos.

Each dataset is split 80/10/10 by class (seed 0). Run::

    .venv/bin/python benchmarks/transfer_accuracy.py [--epochs 15] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imaas.domain import Principal
from imaas.jobs.process import build_worker, limit_threads
from imaas.services.container import build_services
from imaas.settings import Settings

RUNNER = Principal(key_id=None, name="benchmarks/transfer_accuracy.py")


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def faces_zip(path: Path) -> dict[str, int]:
    """LFW subset: the first 100 arrays are faces, the last 100 are not (skimage's docs)."""
    from skimage import data

    arrays = (data.lfw_subset() * 255).round().astype(np.uint8)
    with zipfile.ZipFile(path, "w") as z:
        for i, a in enumerate(arrays):
            z.writestr(f"{'face' if i < 100 else 'not-face'}/{i:03d}.png", _png(a))
    return {"face": 100, "not-face": 100}


def textures_zip(path: Path) -> dict[str, int]:
    """8x8 non-overlapping 64x64 tiles of brick, grass and gravel."""
    from skimage import data

    counts = {}
    with zipfile.ZipFile(path, "w") as z:
        for name in ("brick", "grass", "gravel"):
            photo = getattr(data, name)()
            n = 0
            for r in range(8):
                for c in range(8):
                    z.writestr(f"{name}/{r}{c}.png", _png(photo[r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64]))
                    n += 1
            counts[name] = n
    return counts


def train(services: Any, dataset: str, model: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run one job to its end in this process; its result and timing."""
    worker = build_worker(services, name=f"bench:{model}")
    done = worker.run(services.training.submit(RUNNER, dataset, model, config, claim_for=worker.name))
    if done.state.value != "succeeded":
        raise SystemExit(f"{model}: job {done.state.value}: {done.error}")
    return dict(done.result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    limit_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imaas-transfer-") as tmp:
        settings = Settings(home=Path(tmp) / "home")
        settings.jobs.threads = args.threads
        services = build_services(settings)
        try:
            for name, make in (("faces", faces_zip), ("textures", textures_zip)):
                archive = Path(tmp) / f"{name}.zip"
                counts = make(archive)
                with archive.open("rb") as f:
                    version, _, _ = services.datasets.push(name, f, principal=RUNNER)
                for arch in ("mobilenet-v2-transfer", "seed-cnn"):
                    config: dict[str, Any] = {"arch": arch, "epochs": args.epochs, "early_stopping": {"patience": 5}}
                    if arch == "seed-cnn" and name == "faces":
                        config["input_size"] = [28, 28]  # 25x25 is below the seed CNN's smallest input
                    started = time.monotonic()
                    result = train(services, version.ref, f"{name}-{arch}", config)
                    rows.append(
                        {
                            "dataset": name,
                            "per_class": counts,
                            "test_images": sum(version.summary["counts"]["test"].values()),
                            "arch": arch,
                            "test_accuracy": result["accuracy"],
                            "epochs": result["epochs"],
                            "seconds": round(time.monotonic() - started, 1),
                        }
                    )
        finally:
            asyncio.run(services.close())
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| dataset | images per class | test images | arch | test accuracy | epochs | job seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per = ", ".join(f"{k} {v}" for k, v in r["per_class"].items())
        print(
            f"| {r['dataset']} | {per} | {r['test_images']} | {r['arch']} | {r['test_accuracy']:.3f} "
            f"| {r['epochs']} | {r['seconds']} |"
        )


if __name__ == "__main__":
    main()
