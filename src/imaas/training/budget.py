"""What a training job will need in memory, estimated before it is queued.

A job decodes its whole dataset to the network's input size (uint8), keeps the weights,
their gradients, the optimiser's two moments and the best weights, and holds one batch's
activations forward and backward. The estimate is coarse (within a factor of about two of
what the process reaches) but it is what tells a 28x28 digits job from a 1024x1024 job with
batches of 4,096 *before* a worker is killed for it; the settings' ``jobs.max_memory_mib``
bounds it.

Example::

    need = estimate_bytes(TrainConfig(), images=5000, channels=1, size=(28, 28), classes=10)
    need < 200 * 2**20   # True: the digits job needs well under 200 MiB
"""

from __future__ import annotations

from imaas.errors import InvalidField
from imaas.schemas.training import TrainConfig
from imaas.training.architectures import seed_cnn_flat_size

FLOAT = 4
STATE_COPIES = 5  # weights, gradients, two Adam moments, best weights kept for early stopping
MOBILENET_PARAMETERS = 2_300_000
# activations of one 224x224 image through MobileNetV2 forward and backward, measured order of magnitude
MOBILENET_ACTIVATION_BYTES = 40 * 2**20
RUNTIME_BYTES = 400 * 2**20  # torch, ONNX Runtime and the interpreter themselves


def seed_cnn_parameters(channels: int, size: tuple[int, int], classes: int) -> int:
    """Parameters of seed-cnn for this input (``InvalidField`` for an input too small for it)."""
    flat = seed_cnn_flat_size(size)
    convs = (channels * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 64 + 64)
    return convs + flat * 64 + 64 + 64 * classes + classes


def estimate_bytes(config: TrainConfig, *, images: int, channels: int, size: tuple[int, int], classes: int) -> int:
    """Bytes a job of ``config`` on ``images`` images of ``channels`` x ``size`` will need."""
    h, w = size
    data = images * channels * h * w
    if config.arch == "seed-cnn":
        params = seed_cnn_parameters(channels, size, classes)
        # the first convolution's 32 maps dominate; forward, ReLU, pooling and their gradients
        activations = config.batch_size * 32 * h * w * FLOAT * 6
    else:
        params = MOBILENET_PARAMETERS + 1280 * classes
        activations = config.batch_size * MOBILENET_ACTIVATION_BYTES * (h * w) // (224 * 224)
    return RUNTIME_BYTES + data + params * FLOAT * STATE_COPIES + activations


def check_budget(
    config: TrainConfig, *, images: int, channels: int, size: tuple[int, int], classes: int, max_mib: int
) -> int:
    """``estimate_bytes``, or ``InvalidField`` naming what to lower when it is over ``max_mib``."""
    need = estimate_bytes(config, images=images, channels=channels, size=size, classes=classes)
    if need > max_mib * 2**20:
        raise InvalidField(
            f"config: this job would need about {need / 2**20:,.0f} MiB of memory ({images:,} images of "
            f"{channels}x{h_w(size)} decoded, and batches of {config.batch_size}), over jobs.max_memory_mib "
            f"({max_mib:,}); lower config.input_size or config.batch_size, or use a smaller dataset"
        )
    return need


def h_w(size: tuple[int, int]) -> str:
    """``28x28``."""
    return f"{size[0]}x{size[1]}"
