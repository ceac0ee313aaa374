"""The registry's contract, so services do not care which database backs it."""

from __future__ import annotations

from typing import Any, Protocol

from imaas.domain import ModelRecord, ModelRef, ModelVersion
from imaas.schemas.manifest import Manifest


class RegistryStore(Protocol):
    """Metadata of models, versions and aliases."""

    def add_version(
        self,
        name: str,
        sha256: str,
        size_bytes: int,
        manifest: Manifest,
        *,
        source: str | None = None,
        parent_version: int | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> tuple[ModelVersion, bool]:
        """Register a version; returns it and whether it is new (same bytes+manifest is not)."""
        ...

    def list_models(self, limit: int | None = None, after: str | None = None) -> list[ModelRecord]:
        """Models by name with their latest version and aliases: up to ``limit``, names after ``after``."""
        ...

    def get_model(self, name: str) -> ModelRecord:
        """One model; raises ``ModelNotFound``."""
        ...

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Versions of a model, newest first; raises ``ModelNotFound``."""
        ...

    def resolve(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` designates; raises ``ModelNotFound``/``VersionNotFound``/``AliasNotFound``."""
        ...

    def set_alias(
        self, name: str, alias: str, version: int, actor: str | None = None, *, if_absent: bool = False
    ) -> bool:
        """Point ``alias`` at ``version`` and record the change (unless ``if_absent`` and it
        exists); returns whether it moved."""
        ...

    def aliased_versions(self, alias: str) -> list[ModelVersion]:
        """Every version that ``alias`` points at, one per model."""
        ...
