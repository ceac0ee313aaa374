"""The memory estimate of a training job, against hand-computed parts."""

from __future__ import annotations

import pytest

from imaas.errors import InvalidField
from imaas.schemas.training import TrainConfig
from imaas.training.budget import RUNTIME_BYTES, check_budget, estimate_bytes, seed_cnn_parameters


def test_seed_cnn_parameters_are_the_keras_count() -> None:
    assert seed_cnn_parameters(1, (28, 28), 10) == 93_322


def test_the_estimate_grows_with_the_data_and_the_batch_as_computed_by_hand() -> None:
    config = TrainConfig(batch_size=64)
    base = estimate_bytes(config, images=0, channels=1, size=(28, 28), classes=10)
    assert base == RUNTIME_BYTES + 93_322 * 4 * 5 + 64 * 32 * 28 * 28 * 4 * 6
    assert estimate_bytes(config, images=5000, channels=1, size=(28, 28), classes=10) - base == 5000 * 28 * 28


def test_over_the_budget_names_what_to_lower() -> None:
    huge = TrainConfig(batch_size=4096, input_size=(1024, 1024))
    with pytest.raises(InvalidField, match=r"config: this job would need about .* MiB .* over jobs.max_memory_mib"):
        check_budget(huge, images=100, channels=3, size=(1024, 1024), classes=3, max_mib=8192)
    assert check_budget(TrainConfig(), images=5000, channels=1, size=(28, 28), classes=10, max_mib=8192) < 2**30
