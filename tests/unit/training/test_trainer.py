"""The training loop on small synthetic problems: it learns, stops, cancels and resumes."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imaas.errors import InvalidDataset
from imaas.training.config import parse_train_config
from imaas.training.trainer import (
    Progress,
    TrainData,
    TrainingCancelled,
    balanced_class_weights,
    predict,
    train,
)

SIZE = 20  # seed-cnn's smallest input is 18x18


def _patterns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Four classes of noisy 20x20 patterns at random places: row bar, column bar, diagonal, ring."""
    y = rng.integers(0, 4, n)
    x = np.zeros((n, 1, SIZE, SIZE), np.float32)
    for i, c in enumerate(y):
        o = int(rng.integers(4, SIZE - 4))
        if c == 0:
            x[i, 0, o - 1 : o + 1, 3:-3] = 1
        elif c == 1:
            x[i, 0, 3:-3, o - 1 : o + 1] = 1
        elif c == 2:
            np.fill_diagonal(x[i, 0], 1)
        else:
            x[i, 0, 5:-5, 5:-5] = 1
            x[i, 0, 7:-7, 7:-7] = 0
    x += rng.normal(0, 0.2, x.shape)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8), y.astype(np.int64)


def _data(seed: int = 0, n_train: int = 320, n_val: int = 80) -> TrainData:
    rng = np.random.default_rng(seed)
    xt, yt = _patterns(n_train, rng)
    xv, yv = _patterns(n_val, rng)
    xs, ys = _patterns(40, rng)
    return TrainData(xt, yt, xv, yv, xs, ys, ["row", "column", "diagonal", "ring"], (0.2,), (0.3,))


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy computed in NumPy (float64), independent of torch's loss."""
    z = logits.astype(np.float64)
    z -= z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def test_seed_cnn_learns_a_separable_problem(tmp_path: Path) -> None:
    data = _data()
    events: list[Progress] = []
    result = train(data, parse_train_config({"epochs": 4, "batch_size": 32}), checkpoint=tmp_path / "c.pt",
                   on_progress=events.append)  # fmt: skip
    assert result.stopped == "epochs"
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["val_accuracy"] > 0.9
    assert not result.model.training
    accuracy = float((predict(result.model, data.x_val, mean=data.mean, std=data.std).argmax(1) == data.y_val).mean())
    assert accuracy > 0.9
    ends = [e for e in events if e.val_loss is not None]
    assert [e.epoch for e in ends] == [1, 2, 3, 4]
    assert ends[-1].eta_s == 0
    assert ends[-1].images_per_s > 0
    # the cosine schedule: lr starts at the configured value and decays
    lrs = [h["lr"] for h in result.history]
    assert lrs[0] == pytest.approx(2e-3)
    assert lrs == sorted(lrs, reverse=True)
    assert lrs[-1] < lrs[0]
    assert (tmp_path / "c.pt").is_file()
    assert not list(tmp_path.glob(".c.pt.*"))  # no temporary checkpoint left behind


def test_target_accuracy_stops_early(tmp_path: Path) -> None:
    result = train(_data(), parse_train_config({"epochs": 20, "batch_size": 32, "target_accuracy": 0.5}),
                   checkpoint=tmp_path / "c.pt")  # fmt: skip
    assert result.stopped == "target_accuracy"
    assert len(result.history) < 20
    assert result.history[-1]["val_accuracy"] >= 0.5
    assert all(h["val_accuracy"] < 0.5 for h in result.history[:-1])


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    data = _data()
    rng = np.random.default_rng(1)
    data = replace(data, y_train=rng.integers(0, 4, len(data.y_train)), y_val=rng.integers(0, 4, len(data.y_val)))
    config = parse_train_config({"epochs": 30, "batch_size": 32, "lr": 5e-3, "schedule": "none",
                                 "early_stopping": {"patience": 1}})  # fmt: skip
    result = train(data, config, checkpoint=tmp_path / "c.pt")
    assert result.stopped == "early_stopping"
    val_losses = [h["val_loss"] for h in result.history]
    assert len(val_losses) < 30
    best = int(np.argmin(val_losses))
    assert result.best_epoch == best + 1
    assert val_losses[-1] >= val_losses[best]  # the last epoch did not improve: patience 1 ran out
    logits = predict(result.model, data.x_val, mean=data.mean, std=data.std)
    got = _cross_entropy(logits, data.y_val)
    assert got == pytest.approx(val_losses[best], rel=1e-4)
    assert got != pytest.approx(val_losses[-1], rel=1e-4)


def test_should_stop_cancels(tmp_path: Path) -> None:
    calls = itertools.count()
    with pytest.raises(TrainingCancelled):
        train(_data(), parse_train_config({"epochs": 3, "batch_size": 32}), checkpoint=tmp_path / "c.pt",
              should_stop=lambda: next(calls) >= 3)  # fmt: skip
    assert not (tmp_path / "c.pt").exists()  # cancelled inside epoch 1: no epoch finished


def test_resume_after_cancel_continues_where_it_stopped(tmp_path: Path) -> None:
    data = _data()
    config = parse_train_config({"epochs": 4, "batch_size": 64, "augment": {"rotation_deg": 5}})
    steps = 5  # 320 images / 64
    calls = itertools.count()
    first: list[Progress] = []
    with pytest.raises(TrainingCancelled):
        train(data, config, checkpoint=tmp_path / "c.pt", on_progress=first.append,
              should_stop=lambda: next(calls) >= 2 * steps + 2)  # fmt: skip
    first_epochs = [e for e in first if e.val_loss is not None]
    assert [e.epoch for e in first_epochs] == [1, 2]

    events: list[Progress] = []
    resumed = train(data, config, checkpoint=tmp_path / "c.pt", on_progress=events.append)
    assert resumed.resumed_from == 2
    assert events[0].message == "resumed from the checkpoint of epoch 2"
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert [(h["train_loss"], h["val_loss"]) for h in resumed.history[:2]] == [
        (e.train_loss, e.val_loss) for e in first_epochs
    ]
    assert [e.epoch for e in events if e.val_loss is not None and e.message is None] == [3, 4]

    # the same as never having stopped: weights, optimiser, schedule and random streams were restored
    straight = train(data, config, checkpoint=tmp_path / "other.pt")
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name

    again = train(data, config, checkpoint=tmp_path / "c.pt")  # a finished checkpoint: nothing left to do
    assert again.resumed_from == 4
    assert again.stopped == resumed.stopped
    assert again.history == resumed.history


def test_checkpoint_of_another_config_is_ignored(tmp_path: Path) -> None:
    data = _data(n_train=128, n_val=32)
    train(data, parse_train_config({"epochs": 2, "batch_size": 32}), checkpoint=tmp_path / "c.pt")
    events: list[Progress] = []
    other = train(data, parse_train_config({"epochs": 2, "batch_size": 32, "seed": 7}), checkpoint=tmp_path / "c.pt",
                  on_progress=events.append)  # fmt: skip
    assert other.resumed_from is None
    assert [h["epoch"] for h in other.history] == [1, 2]
    assert all(e.message is None for e in events)
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    assert train(data, parse_train_config({"epochs": 1}), checkpoint=tmp_path / "c.pt").resumed_from is None


def test_time_limit_counts_the_injected_clock(tmp_path: Path) -> None:
    now = itertools.count(step=2.0)  # every reading of the clock advances 2 s
    result = train(_data(n_train=128, n_val=32), parse_train_config({"epochs": 50, "batch_size": 32,
                   "max_minutes": 1}), checkpoint=tmp_path / "c.pt", clock=lambda: float(next(now)))  # fmt: skip
    assert result.stopped == "time_limit"
    assert len(result.history) < 50
    assert result.seconds >= 60


def test_balanced_class_weights_by_hand() -> None:
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    # n / (k * count): 4 / (3 * 3), 4 / (3 * 1); a class with no image weighs 0
    assert weights.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])


def test_balanced_weights_train(tmp_path: Path) -> None:
    data = _data(n_train=128, n_val=32)
    result = train(data, parse_train_config({"epochs": 1, "class_weights": "balanced", "label_smoothing": 0.1,
                                             "optimizer": "sgd", "schedule": "step"}),
                   checkpoint=tmp_path / "c.pt")  # fmt: skip
    assert np.isfinite(result.history[0]["val_loss"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"x_val": np.zeros((4, 1, 21, 20), np.uint8)}, "x_val"),
        ({"y_train": np.full(320, 9)}, "y_train"),
        ({"x_train": np.zeros((320, 1, SIZE, SIZE), np.float32)}, "x_train"),
        ({"mean": (0.1, 0.2, 0.3)}, "mean"),
    ],
)
def test_unusable_arrays_are_refused(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidDataset, match=rf"^{field}: "):
        train(replace(_data(), **change), parse_train_config({"epochs": 1}), checkpoint=tmp_path / "c.pt")
