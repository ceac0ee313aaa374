"""The training loop: arrays and a configuration in, the best model and its history out.

It knows nothing of storage or jobs. The caller (a job in its own process) hands it the
split arrays, a checkpoint path, a progress callback and a cancellation check; the loop

- seeds everything from ``config.seed`` (weights, shuffling and augmentation draw from one
  ``torch.Generator``), so a run is repeatable on one machine and thread count;
- writes a checkpoint atomically after every epoch (temporary file in the same folder,
  fsync, rename: a crash leaves the previous checkpoint whole) and, started again with a
  checkpoint of the same configuration and data, resumes from the epoch after it;
- chooses the best epoch on the validation loss, stops early on ``early_stopping``,
  ``target_accuracy`` or ``max_minutes``, and returns the best weights.

The network sees ``(x / 255 - mean) / std``, the preprocessing a served manifest applies
with ``scale: 1/255`` and the same mean and std, so the exported model needs nothing else.

Example::

    result = train(data, parse_train_config({"epochs": 30}), checkpoint=job_dir / "checkpoint.pt",
                   on_progress=report, should_stop=cancelled, threads=1)
    logits = predict(result.model, data.x_test, mean=data.mean, std=data.std)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imaas.errors import InvalidDataset
from imaas.schemas.training import TrainConfig
from imaas.training.architectures import build_model, train_mode
from imaas.training.augment import augmenter

if TYPE_CHECKING:
    import torch
    from torch import nn

PROGRESS_INTERVAL_S = 0.5
EVAL_BATCH = 256
CHECKPOINT_FORMAT = 1
STOP_REASONS = ("epochs", "early_stopping", "target_accuracy", "time_limit")


@dataclass
class TrainData:
    """The split dataset, already at the network's input size.

    ``x_*`` are uint8 arrays N x C x H x W, ``y_*`` int64 class indices into ``classes``;
    ``mean`` and ``std`` have one value per channel on the 0..1 scale. ``x_test`` may be empty.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        """Colour channels of the images."""
        return int(self.x_train.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the images."""
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])


@dataclass
class Progress:
    """One progress event: during an epoch every ~0.5 s (train metrics so far), at the end
    of each epoch (with validation metrics), and once on resuming (with ``message``)."""

    epoch: int
    epochs: int
    step: int
    steps: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    images_per_s: float
    eta_s: float | None
    best_epoch: int | None
    message: str | None = None


@dataclass
class TrainResult:
    """What a finished run returns. ``model`` is in eval mode with the best epoch's weights."""

    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    stopped: str
    resumed_from: int | None
    seconds: float


class TrainingCancelled(Exception):
    """``should_stop()`` returned true; the checkpoint of the last finished epoch is kept."""


def train(
    data: TrainData,
    config: TrainConfig,
    *,
    checkpoint: Path,
    on_progress: Callable[[Progress], None] = lambda _p: None,
    should_stop: Callable[[], bool] = lambda: False,
    threads: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrainResult:
    """Train the network ``config`` describes on ``data`` and return the best epoch's model.

    Raises ``InvalidDataset`` naming the array that does not fit, ``TrainingCancelled`` when
    ``should_stop()`` turns true (checked before every step). ``threads`` sets torch's
    intra-op threads (process-wide), so a job leaves the server its cores.
    """
    import torch
    from torch import nn

    _check(data)
    if threads is not None:
        torch.set_num_threads(threads)
    started = clock()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_model(config, channels=data.channels, size=data.size, classes=len(data.classes))
    optimizer = _optimizer(config, [p for p in model.parameters() if p.requires_grad])
    scheduler = _scheduler(config, optimizer)
    criterion = nn.CrossEntropyLoss(weight=_class_weights(config, data), label_smoothing=config.label_smoothing)
    augment = augmenter(config.augment, data.channels)
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)

    fingerprint = _fingerprint(config, data)
    state = _RunState()
    saved = _load_checkpoint(checkpoint, fingerprint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        gen.set_state(saved["generator"])
        state = _RunState.restore(saved)
        on_progress(
            Progress(
                epoch=state.epoch,
                epochs=config.epochs,
                step=0,
                steps=0,
                train_loss=None,
                train_accuracy=None,
                val_loss=state.history[-1]["val_loss"] if state.history else None,
                val_accuracy=state.history[-1]["val_accuracy"] if state.history else None,
                images_per_s=0.0,
                eta_s=None,
                best_epoch=state.best_epoch,
                message=f"resumed from the checkpoint of epoch {state.epoch}",
            )
        )
    resumed_from = state.epoch if saved is not None else None
    elapsed_before = state.elapsed
    limit_s = config.max_minutes * 60 if config.max_minutes is not None else math.inf

    def elapsed() -> float:
        return elapsed_before + (clock() - started)

    n = len(data.x_train)
    steps = math.ceil(n / config.batch_size)
    while state.stopped is None:
        epoch = state.epoch + 1
        epoch_start = clock()
        lr = float(optimizer.param_groups[0]["lr"])
        train_mode(model)
        order = torch.randperm(n, generator=gen).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        last_report = clock()
        out_of_time = False
        for step in range(1, steps + 1):
            if should_stop():
                raise TrainingCancelled(f"training cancelled in epoch {epoch}, step {step}")
            if elapsed() >= limit_s:
                out_of_time = True
                break
            idx = order[(step - 1) * config.batch_size : step * config.batch_size]
            xb = augment(torch.from_numpy(data.x_train[idx]).float().div_(255), gen)
            yb = torch.from_numpy(data.y_train[idx]).long()
            logits = model((xb - mean) / std)
            loss = criterion(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
            seen += len(idx)
            now = clock()
            if now - last_report >= PROGRESS_INTERVAL_S:
                last_report = now
                rate = seen / max(now - epoch_start, 1e-9)
                left = (steps - step) * config.batch_size + (config.epochs - epoch) * n
                on_progress(
                    Progress(
                        epoch=epoch,
                        epochs=config.epochs,
                        step=step,
                        steps=steps,
                        train_loss=loss_sum / seen,
                        train_accuracy=correct / seen,
                        val_loss=None,
                        val_accuracy=None,
                        images_per_s=rate,
                        eta_s=left / rate,
                        best_epoch=state.best_epoch,
                    )
                )
        if seen == 0:  # the time limit fell before this epoch's first step
            state.stopped = "time_limit"
            break
        val_loss, val_accuracy = _evaluate(model, criterion, data.x_val, data.y_val, mean, std)
        if scheduler is not None:
            scheduler.step()
        seconds = clock() - epoch_start
        state.epoch = epoch
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "lr": lr,
                "seconds": seconds,
            }
        )
        if val_loss < state.best_val_loss - config.early_stopping.min_delta:
            state.best_val_loss = val_loss
            state.best_epoch = epoch
            state.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state.bad_epochs = 0
        else:
            state.bad_epochs += 1
        state.stopped = _stop_reason(config, state, val_accuracy, out_of_time or elapsed() >= limit_s)
        state.elapsed = elapsed()
        _save_checkpoint(
            checkpoint,
            {
                **state.dump(),
                "format": CHECKPOINT_FORMAT,
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "torch_rng": torch.get_rng_state(),
                "generator": gen.get_state(),
            },
        )
        remaining = config.epochs - epoch if state.stopped is None else 0
        on_progress(
            Progress(
                epoch=epoch,
                epochs=config.epochs,
                step=steps,
                steps=steps,
                train_loss=loss_sum / seen,
                train_accuracy=correct / seen,
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                images_per_s=seen / max(seconds, 1e-9),
                eta_s=remaining * seconds,
                best_epoch=state.best_epoch,
            )
        )

    if state.best_model is not None:
        model.load_state_dict(state.best_model)
    model.eval()
    best_epoch = state.best_epoch if state.best_epoch is not None else state.epoch
    return TrainResult(
        model=model,
        history=state.history,
        best_epoch=best_epoch,
        stopped=state.stopped,
        resumed_from=resumed_from,
        seconds=elapsed(),
    )


def predict(
    model: nn.Module,
    x: np.ndarray,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = EVAL_BATCH,
) -> np.ndarray:
    """Logits (N x classes, float32) of ``model`` on uint8 images ``x`` (N x C x H x W),
    normalised as in training; in eval mode, without gradients, in batches."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    model.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[start : start + batch_size]).float().div_(255)
            out.append(model((xb - m) / s).numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


@dataclass
class _RunState:
    """What a checkpoint carries besides the torch states (plain values: weights_only loads it)."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    best_model: dict[str, Any] | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    stopped: str | None = None

    def dump(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def restore(cls, saved: dict[str, Any]) -> _RunState:
        return cls(**{f.name: saved[f.name] for f in fields(cls)})


def _check(data: TrainData) -> None:
    """Refuse arrays the loop cannot use, naming the first one that does not fit."""
    if data.x_train.ndim != 4 or len(data.x_train) == 0:
        raise InvalidDataset(f"x_train: expected uint8 images N x C x H x W (N >= 1), got shape {data.x_train.shape}")
    if len(data.x_val) == 0:
        raise InvalidDataset("x_val: training needs validation images (the best epoch is chosen on them)")
    shape = data.x_train.shape[1:]
    classes = len(data.classes)
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if x.dtype != np.uint8 or x.ndim != 4 or (len(x) and x.shape[1:] != shape):
            expected = "x".join(map(str, shape))
            raise InvalidDataset(f"x_{split}: expected uint8 images N x {expected}, got {x.dtype} {x.shape}")
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise InvalidDataset(f"y_{split}: expected {len(x)} integer labels, got {y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise InvalidDataset(f"y_{split}: labels must be class indices 0..{classes - 1}")
    if len(data.mean) != shape[0] or len(data.std) != shape[0]:
        raise InvalidDataset(
            f"mean: one mean and one std per channel ({shape[0]}), got {len(data.mean)} and {len(data.std)}"
        )
    if any(not s > 0 for s in data.std):
        raise InvalidDataset(f"std: every value must be > 0, got {list(data.std)}")


def _optimizer(config: TrainConfig, params: list[Any]) -> torch.optim.Optimizer:
    import torch

    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    import torch

    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    return None


def balanced_class_weights(y: np.ndarray, classes: int) -> np.ndarray:
    """``n / (classes * count_c)`` per class (scikit-learn's "balanced"): each class weighs the
    same in the loss in all; a class with no training image gets weight 0 instead of infinity."""
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    weights = np.zeros(classes, dtype=np.float64)
    present = counts > 0
    weights[present] = len(y) / (classes * counts[present])
    return weights


def _class_weights(config: TrainConfig, data: TrainData) -> torch.Tensor | None:
    import torch

    if config.class_weights != "balanced":
        return None
    weights = balanced_class_weights(data.y_train, len(data.classes))
    return torch.tensor(weights, dtype=torch.float32)


def _evaluate(
    model: nn.Module, criterion: nn.Module, x: np.ndarray, y: np.ndarray, mean: torch.Tensor, std: torch.Tensor
) -> tuple[float, float]:
    import torch

    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            xb = torch.from_numpy(x[start : start + EVAL_BATCH]).float().div_(255)
            yb = torch.from_numpy(y[start : start + EVAL_BATCH]).long()
            logits = model((xb - mean) / std)
            loss_sum += float(criterion(logits, yb)) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
    return loss_sum / len(x), correct / len(x)


def _stop_reason(config: TrainConfig, state: _RunState, val_accuracy: float, out_of_time: bool) -> str | None:
    if config.target_accuracy is not None and val_accuracy >= config.target_accuracy:
        return "target_accuracy"
    if state.bad_epochs >= config.early_stopping.patience:
        return "early_stopping"
    if out_of_time:
        return "time_limit"
    if state.epoch >= config.epochs:
        return "epochs"
    return None


def _fingerprint(config: TrainConfig, data: TrainData) -> str:
    """What must match for a checkpoint to be resumed: the configuration, the arrays' shapes,
    the classes, the normalisation and the labels (cheap to hash, and they tell splits apart)."""
    digest = hashlib.sha256()
    meta = {
        "config": config.model_dump(mode="json"),
        "shapes": {k: list(getattr(data, k).shape) for k in ("x_train", "x_val", "x_test")},
        "classes": data.classes,
        "mean": list(data.mean),
        "std": list(data.std),
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for y in (data.y_train, data.y_val, data.y_test):
        digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to this run; None (start afresh) if it is
    missing, unreadable or from another configuration or dataset."""
    import torch

    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file: it is overwritten after the first epoch
        return None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        return None
    return saved if saved.get("fingerprint") == fingerprint else None


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsynced,
    then renamed over the old checkpoint, so a reader sees the old or the new one whole."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
