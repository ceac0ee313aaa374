"""Install the bundled models: build, export with a parity check, register. Idempotent."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imaas.errors import ImaasError, ModelNotFound
from imaas.services.models import ModelService
from imaas.training.export import export_onnx, parity
from imaas.zoo.recipes import Recipe, recipes

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class InstallResult:
    """What happened to one recipe."""

    name: str
    version: int
    installed: bool
    max_abs_diff: float | None = None


def _installed_version(models: ModelService, recipe: Recipe) -> int | None:
    try:
        _, versions = models.describe(recipe.name)
    except ModelNotFound:
        return None
    return next((v.version for v in versions if v.source == recipe.source), None)


def install_recipe(models: ModelService, recipe: Recipe, progress: Progress | None = None) -> InstallResult:
    """Install one recipe unless a version built by the same recipe revision exists."""
    say = progress or (lambda _n, _s: None)
    existing = _installed_version(models, recipe)
    if existing is not None:
        say(recipe.name, "already installed")
        return InstallResult(recipe.name, existing, installed=False)
    say(recipe.name, "loading weights")
    module = recipe.build_module()
    size = recipe.manifest.input.size or (224, 224)
    with tempfile.TemporaryDirectory(prefix="imaas-zoo-") as tmp:
        path = Path(tmp) / f"{recipe.name}.onnx"
        say(recipe.name, "exporting to ONNX")
        export_onnx(module, path, channels=3, size=size)
        say(recipe.name, "checking parity with PyTorch")
        rng = np.random.default_rng(0)
        diff = parity(module, path, rng.standard_normal((2, 3, *size), dtype=np.float32))
        say(recipe.name, "registering")
        version, _ = models.push_file(
            recipe.name, path, recipe.manifest, source=recipe.source, metrics={"onnx_parity_max_abs_diff": diff}
        )
    say(recipe.name, f"installed as version {version.version} (parity max abs diff {diff:.1e})")
    return InstallResult(recipe.name, version.version, installed=True, max_abs_diff=diff)


def install(
    models: ModelService, only: list[str] | None = None, progress: Progress | None = None
) -> list[InstallResult]:
    """Install every recipe (or those named in ``only``)."""
    chosen = [r for r in recipes() if not only or r.name in only]
    unknown = set(only or []) - {r.name for r in chosen}
    if unknown:
        raise ImaasError(f"no bundled model named {sorted(unknown)}; available: {[r.name for r in recipes()]}")
    return [install_recipe(models, r, progress) for r in chosen]
