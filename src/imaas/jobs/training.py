"""The training job: a dataset version in, an evaluated and registered model version out.

Steps, each reported to the job's log: read the dataset version's canonical archive;
decode every image to the model's input size with the very pre-processing the served
version will apply (``imaging.pipeline``, so training and serving see the same pixels);
train (``training.trainer``: checkpoints every epoch, so a worker killed mid-training
resumes where it was); evaluate the best weights on the test split; export to ONNX and
check the export against PyTorch on the whole test split (max abs diff under 1e-4); draw
the confusion matrix and the training curves; and only then push the ONNX file with its
manifest (pre-processing, labels), metrics and lineage (dataset version, job, configuration,
parent version) as a new version with the ``staging`` alias. Any failure before the push
leaves no version; a push is atomic, and pushing the same bytes again (a job resumed after
its push) returns the same version. A trained version never becomes ``production`` by
itself, not even a model's first: promoting it is a decision taken on its metrics.

Example::

    job_function = TrainingJob(datasets, models, artifacts, limits)
    runner = LocalRunner({"train": job_function})
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from imaas.domain import Job
from imaas.errors import ModelNotFound
from imaas.imaging.decode import DecodeLimits
from imaas.imaging.pipeline import image_to_tensor
from imaas.jobs.runner import JobCancelled, JobContext
from imaas.registry.artifacts.store import ArtifactStore
from imaas.schemas.manifest import Manifest
from imaas.schemas.training import TrainConfig
from imaas.services.datasets import DatasetService, parse_ref
from imaas.services.models import ModelService
from imaas.training.architectures import IMAGENET_MEAN, IMAGENET_STD, model_input_size
from imaas.training.bundle import Bundle
from imaas.training.config import parse_train_config
from imaas.training.evaluate import evaluate
from imaas.training.export import export_onnx, parity
from imaas.training.plots import confusion_png, curves_png
from imaas.training.trainer import Progress, TrainData, TrainingCancelled, predict, train

STAGING = "staging"
SPLITS = ("train", "validation", "test")


def training_manifest(config: TrainConfig, summary: dict[str, Any], description: str) -> Manifest:
    """The manifest the trained version is served with: its input, the pre-processing
    training used (the train split's statistics for ``seed-cnn``; ImageNet's for the
    pretrained backbone), the dataset's labels, softmax over the logits."""
    size = model_input_size(config, tuple(summary["input"]["size"]))
    classes = summary["classes"]
    if config.arch == "mobilenet-v2-transfer":
        color, mean, std = "RGB", IMAGENET_MEAN, IMAGENET_STD
        pre: dict[str, Any] = {"resize": "shorter", "resize_to": max(size), "crop": "center"}
    else:
        color, mean, std = summary["input"]["color"], tuple(summary["mean"]), tuple(summary["std"])
        pre = {"resize": "exact", "crop": "none"}
    return Manifest.model_validate(
        {
            "task": "classification",
            "description": description,
            "input": {"name": "input", "layout": "NCHW", "size": list(size), "color": color, "dtype": "float32"},
            "preprocess": {**pre, "scale": 1 / 255, "mean": list(mean), "std": list(std)},
            "labels": list(classes),
            "postprocess": {"activation": "softmax", "top_k": min(5, len(classes))},
        }
    )


def load_data(bundle: Bundle, manifest: Manifest, limits: DecodeLimits) -> TrainData:
    """Every image of the bundle as uint8 N x C x H x W at the input size, by split, with
    label indices in the order of ``manifest.labels``."""
    spec = manifest.input.model_copy(update={"dtype": "uint8"})
    classes = list(manifest.labels or [])
    index = {label: i for i, label in enumerate(classes)}
    arrays: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    labels: dict[str, list[int]] = {s: [] for s in SPLITS}
    for sample, data in zip(bundle.samples, bundle.read_all(bundle.samples), strict=True):
        arrays[sample.split].append(image_to_tensor(data, spec, manifest.preprocess, limits))
        labels[sample.split].append(index[sample.label])
    c = manifest.input.channels
    h, w = manifest.input.size or (0, 0)

    def stack(split: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack(arrays[split]) if arrays[split] else np.zeros((0, c, h, w), np.uint8)
        return x, np.asarray(labels[split], dtype=np.int64)

    (xt, yt), (xv, yv), (xs, ys) = (stack(s) for s in SPLITS)
    pre = manifest.preprocess
    mean = tuple(pre.mean) * (c if len(pre.mean) == 1 else 1)
    std = tuple(pre.std) * (c if len(pre.std) == 1 else 1)
    return TrainData(xt, yt, xv, yv, xs, ys, classes, mean, std)


def normalised_batches(
    x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], batch: int = 64
) -> Iterator[np.ndarray]:
    """``(x / 255 - mean) / std`` as float32, ``batch`` images at a time (what the served
    manifest computes), so the whole split is never held as floats."""
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    for start in range(0, len(x), batch):
        yield ((x[start : start + batch].astype(np.float32) / 255 - m) / s).astype(np.float32)


class TrainingJob:
    """The ``train`` job function: what a runner calls with a claimed job."""

    def __init__(
        self, datasets: DatasetService, models: ModelService, artifacts: ArtifactStore, limits: DecodeLimits
    ) -> None:
        self.datasets = datasets
        self.models = models
        self.artifacts = artifacts
        self.limits = limits

    def __call__(self, job: Job, context: JobContext) -> dict[str, Any]:
        """Train, evaluate, export and register; returns the job's result."""
        started = time.monotonic()
        config = parse_train_config(job.config)
        name, number = parse_ref(job.dataset)
        version = self.datasets.datasets.get_version(name, number)
        bundle = self.datasets.open(version)
        manifest = training_manifest(config, version.summary, f"{config.arch} trained on {version.ref} by {job.id}")
        context.log(
            f"dataset {version.ref}: {version.summary['images']} images in {len(version.summary['classes'])} classes"
        )
        data = load_data(bundle, manifest, self.limits)
        context.log(
            f"decoded to {data.channels}x{data.size[0]}x{data.size[1]}: "
            f"train {len(data.y_train)}, validation {len(data.y_val)}, test {len(data.y_test)}"
        )
        context.confirm()
        try:
            result = train(
                data,
                config,
                checkpoint=context.work_dir / "checkpoint.pt",
                on_progress=lambda p: self._report(context, p),
                should_stop=context.cancelled,
                threads=context.threads,
            )
        except TrainingCancelled:
            raise JobCancelled from None
        context.log(
            f"training stopped ({result.stopped}) after {len(result.history)} epochs; best epoch {result.best_epoch}"
        )
        logits = predict(result.model, data.x_test, mean=data.mean, std=data.std)
        test = evaluate(logits, data.y_test, data.classes)
        context.confirm()  # a cancel asked while it trained its last epoch ends it here
        onnx_path = context.work_dir / "model.onnx"
        export_onnx(result.model, onnx_path, channels=data.channels, size=data.size)
        diff = parity(result.model, onnx_path, normalised_batches(data.x_test, data.mean, data.std), context.threads)
        context.log(f"test accuracy {test['accuracy']:.4f}; ONNX parity max abs diff {diff:.2e} on the test split")
        plots = {
            "confusion": self._store(confusion_png(test["confusion"], data.classes)),
            "curves": self._store(curves_png(result.history)),
        }
        best = next(h for h in result.history if h["epoch"] == result.best_epoch)
        metrics = {
            "accuracy": test["accuracy"],
            "macro_f1": test["macro_f1"],
            "test": test,
            "validation": {"loss": best["val_loss"], "accuracy": best["val_accuracy"]},
            "training": {
                "arch": config.arch,
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
                "stopped": result.stopped,
                "seconds": round(result.seconds, 2),
                "resumed_from": result.resumed_from,
                "history": result.history,
                "config": config.model_dump(mode="json"),
            },
            "onnx_parity_max_abs_diff": diff,
            "plots": plots,
            "lineage": {"dataset": version.ref, "dataset_sha256": version.sha256, "job": job.id},
        }
        parent = self._production(job.model)
        context.confirm()  # still this worker's job, and not cancelled: register it once
        with onnx_path.open("rb") as f:
            registered, created = self.models.push(
                job.model,
                f,
                manifest,
                source=f"job:{job.id}",
                metrics=metrics,
                alias=STAGING,
                actor=job.created_by,
                parent_version=parent,
                dataset=version.ref,
                job_id=job.id,
                first_is_production=False,
            )
        again = "" if created else " (already there)"
        context.log(f"registered {job.model}@{registered.version} as {STAGING}{again}")
        return {
            "model": job.model,
            "version": registered.version,
            "alias": STAGING,
            "accuracy": test["accuracy"],
            "macro_f1": test["macro_f1"],
            "epochs": len(result.history),
            "stopped": result.stopped,
            "training_seconds": round(result.seconds, 2),
            "job_seconds": round(time.monotonic() - started, 2),
            "plots": plots,
        }

    @staticmethod
    def _report(context: JobContext, progress: Progress) -> None:
        data = dataclasses.asdict(progress)
        context.progress(data)
        if progress.message:
            context.log(progress.message)
        # an epoch's end; the report on resuming (step = steps = 0) repeats an epoch already logged
        if progress.steps > 0 and progress.step == progress.steps and progress.val_loss is not None:
            context.event("epoch", data)

    def _store(self, png: bytes) -> str:
        staged = self.artifacts.stage(io.BytesIO(png))
        self.artifacts.commit(staged)
        return staged.sha256

    def _production(self, model: str) -> int | None:
        try:
            return self.models.get_model(model).aliases.get("production")
        except ModelNotFound:
            return None


