"""Wire model of a training configuration: which network, how to optimise it, when to stop.

Every field has a default, so ``{}`` is a valid configuration: the seed CNN with AdamW
2e-3, cosine decay, ±2 px shifts and early stopping with patience 8, the settings that
reach 97-98% on the 5,000 MNIST digits. Unknown keys are refused (a typo such as
``epoch`` must not silently train with the default). Options that only one choice uses
(``momentum`` for sgd, ``step_size``/``gamma`` for the step schedule) are ignored by the
others, so a stored configuration always parses back.

Example::

    config = TrainConfig.model_validate({"epochs": 20, "augment": {"rotation_deg": 10}})

``imaas.training.config.parse_train_config`` turns its validation errors into an
``InvalidField`` naming each field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

Arch = Literal["seed-cnn", "mobilenet-v2-transfer"]
TRANSFER_SIZE = (224, 224)
MAX_FINE_TUNE_BLOCKS = 7

Side = Annotated[int, Field(ge=8, le=1024)]
AreaFraction = Annotated[float, Field(gt=0, le=1)]


def _cross_field(field: str, message: str) -> PydanticCustomError:
    """An error that names ``field`` in its message and carries it for ``parse_train_config``."""
    return PydanticCustomError("cross_field", "{field}: " + message, {"field": field})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Augment(_Strict):
    """Random changes to each training batch (never to validation or test images).

    Applied on the 0..1 pixel scale before normalisation (see ``imaas.training.augment``).
    """

    random_resized_crop: bool = Field(
        False, description="crop a random part of the image (area fraction in crop_scale) and resize it back"
    )
    crop_scale: tuple[AreaFraction, AreaFraction] = Field(
        (0.7, 1.0), description="[min, max] area fraction kept by random_resized_crop"
    )
    flip: bool | None = Field(
        None,
        description="random horizontal flips; null = automatic: on for 3-channel photos, off for 1-channel "
        "inputs such as digits, where a mirror image is another symbol",
    )
    rotation_deg: float = Field(0, ge=0, le=45, description="random rotation up to ± this many degrees")
    color_jitter: float = Field(
        0, ge=0, le=0.5, description="brightness/contrast (and saturation for RGB) factors drawn from 1 ± this"
    )
    shift_px: int = Field(2, ge=0, le=8, description="random translation up to ± this many pixels (digits default)")

    @field_validator("crop_scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise PydanticCustomError("crop_scale", "must be [min, max] with min <= max (got {v})", {"v": list(v)})
        return v


class EarlyStopping(_Strict):
    """Stop when the validation loss has not improved for ``patience`` epochs."""

    patience: int = Field(8, ge=1, le=1000, description="epochs without improvement before stopping")
    min_delta: float = Field(
        0.0, ge=0, le=1e6, description="an epoch improves only if it lowers the validation loss by more than this"
    )


class TrainConfig(_Strict):
    """How to train one model; see the module docstring for the defaults' provenance."""

    arch: Arch = Field(
        "seed-cnn",
        description="seed-cnn: a small CNN trained from scratch (digits, small images); mobilenet-v2-transfer: "
        "ImageNet MobileNetV2 with a new head (RGB photos)",
    )
    epochs: int = Field(40, ge=1, le=1000, description="most epochs to train")
    batch_size: int = Field(64, ge=1, le=4096, description="images per optimiser step")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adamw", description="optimiser")
    lr: float = Field(2e-3, gt=0, le=10, description="initial learning rate")
    momentum: float = Field(0.9, ge=0, le=1, description="momentum (sgd only; ignored otherwise)")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="weight decay (decoupled for adamw)")
    schedule: Literal["cosine", "step", "none"] = Field(
        "cosine", description="learning-rate schedule: cosine decay over the epochs, a step decay, or constant"
    )
    step_size: int = Field(10, ge=1, le=1000, description="epochs between decays (step schedule only)")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor per step (step schedule only)")
    label_smoothing: float = Field(0, ge=0, lt=1, description="cross-entropy label smoothing")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weigh each class's loss by n / (classes * count), for imbalanced datasets"
    )
    augment: Augment = Field(default_factory=Augment, description="training-batch augmentations")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping, description="early stopping")
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="stop once the validation accuracy reaches this (0..1)"
    )
    max_minutes: float | None = Field(
        None, gt=0, le=10080, description="wall-clock limit in minutes (a resumed job counts its earlier time)"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of every random choice (init, shuffling, augment)")
    fine_tune_blocks: int = Field(
        0,
        ge=0,
        le=MAX_FINE_TUNE_BLOCKS,
        description="mobilenet-v2-transfer only: how many of MobileNetV2's last feature blocks train with the head",
    )
    input_size: tuple[Side, Side] | None = Field(
        None,
        description="[height, width] the network takes; null = the dataset's size for seed-cnn, 224x224 for "
        "mobilenet-v2-transfer",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.fine_tune_blocks and self.arch != "mobilenet-v2-transfer":
            raise _cross_field("fine_tune_blocks", "only mobilenet-v2-transfer has blocks to fine-tune")
        return self
