"""The zoo's embedding model comes from its classifier's own file: installed with it, and
installed again from that file when it is missing (its push failed, or it was deleted)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from imaas.services.container import build_services
from imaas.settings import Settings
from imaas.zoo.install import install
from imaas.zoo.recipes import recipes


def test_a_missing_embedding_model_is_installed_from_the_classifiers_file(zoo_home: Path, tmp_path: Path) -> None:
    zoo = build_services(Settings(home=zoo_home))
    fresh = build_services(Settings(home=tmp_path / "home"))
    try:
        recipe = next(r for r in recipes() if r.embedding is not None)
        _, versions = zoo.models.describe(recipe.name)
        classifier = next(v for v in versions if v.source == recipe.source)
        _, embedded = zoo.models.describe(recipe.embedding or "")
        assert [v.sha256 for v in embedded] == [classifier.sha256]  # one file for both
        # a registry holding only the classifier (the embedding model's push failed)
        fresh.models.push_file(
            recipe.name, zoo.artifacts.open_path(classifier.sha256), recipe.manifest, source=recipe.source
        )
        results = install(fresh, [recipe.embedding or ""])
        assert [(r.name, r.installed) for r in results] == [(recipe.name, False), (recipe.embedding, True)]
        _, again = fresh.models.describe(recipe.embedding or "")
        assert [(v.sha256, v.manifest.task, v.manifest.postprocess.output) for v in again] == [
            (classifier.sha256, "embedding", "features")
        ]
        assert install(fresh, [recipe.embedding or ""])[1].installed is False  # and only once
    finally:
        asyncio.run(zoo.close())
        asyncio.run(fresh.close())
