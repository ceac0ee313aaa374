"""The training configuration: defaults, and every refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from imaas.errors import InvalidField
from imaas.schemas.training import TrainConfig
from imaas.training.config import parse_train_config


def test_defaults_are_valid_and_the_documented_ones() -> None:
    config = parse_train_config({})
    assert config == TrainConfig()
    assert (config.arch, config.optimizer, config.lr, config.schedule) == ("seed-cnn", "adamw", 2e-3, "cosine")
    assert config.early_stopping.patience == 8
    assert config.augment.shift_px == 2
    assert config.augment.flip is None


def test_a_dumped_config_parses_back_unchanged() -> None:
    config = parse_train_config({"optimizer": "sgd", "momentum": 0.5, "augment": {"rotation_deg": 10}})
    assert parse_train_config(config.model_dump(mode="json")) == config


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"lr": -1}, "lr", "greater than 0"),
        ({"optimizer": "rmsprop"}, "optimizer", "'adam', 'adamw' or 'sgd'"),
        ({"epoch": 5}, "epoch", "Extra inputs are not permitted"),
        ({"fine_tune_blocks": 2}, "fine_tune_blocks", "only mobilenet-v2-transfer has blocks to fine-tune"),
        ({"split": [0.8, 0.1, 0.1]}, "split", "Extra inputs are not permitted"),  # the dataset's upload splits
        ({"augment": {"rotation_deg": 90}}, "augment.rotation_deg", "less than or equal to 45"),
        ({"augment": {"crop_scale": [0.9, 0.5]}}, "augment.crop_scale", "min <= max"),
        ({"early_stopping": {"patience": 0}}, "early_stopping.patience", "greater than or equal to 1"),
        ({"input_size": [4, 28]}, "input_size.0", "greater than or equal to 8"),
        ({"lr": float("nan")}, "lr", "finite"),
    ],
)
def test_invalid_fields_are_named(data: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(InvalidField) as info:
        parse_train_config(data)
    assert info.value.extra["errors"] == [{"field": field, "message": info.value.extra["errors"][0]["message"]}]
    message = info.value.extra["errors"][0]["message"]
    assert fragment in message
    assert info.value.detail == f"{field}: {message}"


def test_every_error_is_listed() -> None:
    with pytest.raises(InvalidField) as info:
        parse_train_config({"epochs": 0, "batch_size": 0})
    assert [e["field"] for e in info.value.extra["errors"]] == ["epochs", "batch_size"]
    assert info.value.detail.startswith("epochs: ")
    assert "; batch_size: " in info.value.detail


def test_fine_tune_blocks_allowed_for_transfer() -> None:
    assert parse_train_config({"arch": "mobilenet-v2-transfer", "fine_tune_blocks": 7}).fine_tune_blocks == 7


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidField):
        parse_train_config([1, 2])  # type: ignore[arg-type]
