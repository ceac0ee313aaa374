"""Model catalog use cases: push a version, list and describe models, move aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import yaml
from pydantic import ValidationError

from imaas.domain import PRODUCTION, ModelRecord, ModelVersion, Principal, check_name
from imaas.errors import InvalidManifest
from imaas.registry.artifacts.store import ArtifactStore, Staged
from imaas.registry.store import RegistryStore
from imaas.runtime.graph import check_model_file
from imaas.runtime.probe import probe_manifest
from imaas.runtime.tasks import complete_manifest
from imaas.schemas.manifest import Manifest
from imaas.services.access import visible


def parse_manifest(raw: str | bytes | dict[str, Any] | Manifest | None) -> Manifest:
    """Parse a manifest given as YAML/JSON text, a dict or a ``Manifest``.

    Raises ``InvalidManifest`` whose detail names each offending field.
    """
    if isinstance(raw, Manifest):
        return raw
    data: Any = {} if raw is None else raw
    if isinstance(raw, (str, bytes)):
        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise InvalidManifest(f"the manifest is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidManifest("the manifest must be a mapping (YAML or JSON object)")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(root)", "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidManifest(detail, errors=errors) from None


class ModelService:
    """Registers and describes models (synchronous: the edges run it on a thread). A server
    pushes through ``LifecycleService.push``, which takes up the change in its caches."""

    def __init__(self, registry: RegistryStore, artifacts: ArtifactStore, max_upload_bytes: int) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.max_upload_bytes = max_upload_bytes

    def push(
        self,
        name: str,
        onnx: BinaryIO,
        manifest: str | bytes | dict[str, Any] | Manifest | None,
        *,
        source: str | None = None,
        metrics: dict[str, Any] | None = None,
        alias: str | None = None,
        actor: str | None = None,
        parent_version: int | None = None,
        dataset: str | None = None,
        job_id: str | None = None,
        first_is_production: bool = True,
    ) -> tuple[ModelVersion, bool]:
        """Validate and register an ONNX file with its manifest.

        The file is staged, checked with ``onnx.checker``, the manifest completed from the
        graph, the graph run once on zeros by ONNX Runtime (``probe_manifest``: a graph it
        cannot run is refused, one that only runs a batch of 1 is recorded so), and only then
        stored and registered. Pushing the same bytes and manifest again
        returns the existing version (``created`` False) and stores nothing new. The first
        version of a model becomes its ``production`` version; ``alias`` points another alias
        (or ``production``) at the new version. ``parent_version``, ``dataset`` (``name@version``)
        and ``job_id`` are the lineage of a version trained on the platform, which passes
        ``first_is_production=False``: a trained version is promoted by someone who read its metrics.
        """
        check_name(name)
        parsed = parse_manifest(manifest)
        staged = self.artifacts.stage(onnx, self.max_upload_bytes)
        try:
            graph = check_model_file(staged.path)
            complete = probe_manifest(staged.path, complete_manifest(parsed, graph))
        except BaseException:
            self.artifacts.discard(staged)
            raise
        try:
            self.artifacts.commit(staged, keep=True)
            version, created = self.registry.add_version(
                name,
                staged.sha256,
                staged.size,
                complete,
                source=source,
                metrics=metrics,
                actor=actor,
                ensure_artifact=lambda: self._ensure_stored(staged),
                parent_version=parent_version,
                dataset=dataset,
                job_id=job_id,
            )
        finally:
            self.artifacts.discard(staged)
        if first_is_production:
            self.registry.set_alias(
                name, PRODUCTION, version.version, actor=actor or "push", if_absent=True, action="push"
            )
        if alias is not None and self.registry.get_model(name).aliases.get(alias) != version.version:
            self.registry.set_alias(name, alias, version.version, actor=actor or "push", action="push")
        return version, created

    def _ensure_stored(self, staged: Staged) -> None:
        if not self.artifacts.exists(staged.sha256):
            self.artifacts.commit(staged, keep=True)

    def push_file(
        self, name: str, path: Path, manifest: str | bytes | dict[str, Any] | Manifest | None, **kwargs: Any
    ) -> tuple[ModelVersion, bool]:
        """``push`` from a file on disk."""
        with path.open("rb") as f:
            return self.push(name, f, manifest, **kwargs)

    def list_models(self, limit: int | None = None, after: str | None = None) -> list[ModelRecord]:
        """Models by name: up to ``limit`` (all by default) whose name sorts after ``after``."""
        return self.registry.list_models(limit, after)

    def list_visible(self, principal: Principal, limit: int, after: str | None = None) -> list[ModelRecord]:
        """``list_models`` as ``principal`` sees it: a key limited to some models lists only
        those (pages are read on until ``limit`` visible ones are found or none are left)."""
        if principal.models is None:
            return self.registry.list_models(limit, after)
        found: list[ModelRecord] = []
        while len(found) < limit:
            page = self.registry.list_models(max(limit, 200), after)
            found += visible(principal, page)
            if len(page) < max(limit, 200):
                break
            after = page[-1].name
        return found[:limit]

    def describe(self, name: str) -> tuple[ModelRecord, list[ModelVersion]]:
        """A model and its versions, newest first."""
        return self.registry.get_model(name), self.registry.list_versions(name)

    def get_model(self, name: str) -> ModelRecord:
        """One model with its aliases and routes."""
        return self.registry.get_model(name)

    def get_version(self, name: str, version: int) -> ModelVersion:
        """One version of a model."""
        return self.registry.get_version(name, version)
