"""Datasets in the registry database: named, versioned, immutable.

A dataset version is one canonical archive in the artifact store (by sha256) with its
summary (classes, split counts, input size, channel statistics) and the cleaning report of
the upload that made it. Uploading content that makes the same archive again returns the
existing version; version numbers are never given twice (``datasets.last_version``).

Example::

    datasets = SqlDatasets(open_registry("sqlite:////tmp/imaas/registry.db"))
    version, created = datasets.add_version("digits", sha, size, summary, report)
    datasets.get_version("digits")          # the newest
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from imaas.domain import DatasetVersion
from imaas.errors import DatasetNotFound
from imaas.registry.fields import check_description
from imaas.registry.queries import aware
from imaas.registry.sql import SqlRegistry
from imaas.registry.tables import DatasetRow, DatasetVersionRow, utcnow


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset with its version count and newest version."""

    name: str
    created_at: datetime
    versions: int
    latest: DatasetVersion | None


def to_dataset_version(name: str, row: DatasetVersionRow) -> DatasetVersion:
    """The domain form of a dataset version row."""
    return DatasetVersion(
        dataset=name,
        version=row.version,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        summary=dict(row.summary),
        report=dict(row.report),
        created_at=aware(row.created_at),
        created_by=row.created_by,
        description=row.description,
    )


class SqlDatasets:
    """The dataset tables of a ``SqlRegistry``."""

    def __init__(self, registry: SqlRegistry) -> None:
        self.registry = registry

    def add_version(
        self,
        name: str,
        sha256: str,
        size_bytes: int,
        summary: dict[str, Any],
        report: dict[str, Any],
        *,
        created_by: str | None = None,
        description: str = "",
    ) -> tuple[DatasetVersion, bool]:
        """Register a version (creating the dataset on its first); the same archive again
        returns the existing version and False. ``InvalidField`` for a description that is
        too long or holds a NUL character (PostgreSQL cannot store one)."""
        check_description(description)

        def work(s: Any, _state: Any) -> tuple[DatasetVersion, bool]:
            ds = s.scalars(select(DatasetRow).where(DatasetRow.name == name)).first()
            if ds is None:
                ds = DatasetRow(name=name, created_at=utcnow(), last_version=0)
                s.add(ds)
                s.flush()
            same = s.scalars(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.dataset_id == ds.id, DatasetVersionRow.sha256 == sha256
                )
            ).first()
            if same is not None:
                return to_dataset_version(name, same), False
            ds.last_version += 1
            row = DatasetVersionRow(
                dataset_id=ds.id,
                version=ds.last_version,
                sha256=sha256,
                size_bytes=size_bytes,
                summary=summary,
                report=report,
                created_at=utcnow(),
                created_by=created_by,
                description=description,
            )
            s.add(row)
            s.flush()
            return to_dataset_version(name, row), True

        return self.registry._write(work, "registering a dataset version")

    def list_datasets(self) -> list[DatasetRecord]:
        """Every dataset by name, with its newest version."""
        with self.registry._session() as s:
            counts = dict(
                s.execute(
                    select(DatasetVersionRow.dataset_id, func.count()).group_by(DatasetVersionRow.dataset_id)
                ).all()
            )
            out = []
            for ds in s.scalars(select(DatasetRow).order_by(DatasetRow.name)):
                latest = s.scalars(
                    select(DatasetVersionRow)
                    .where(DatasetVersionRow.dataset_id == ds.id)
                    .order_by(DatasetVersionRow.version.desc())
                    .limit(1)
                ).first()
                out.append(
                    DatasetRecord(
                        name=ds.name,
                        created_at=aware(ds.created_at),
                        versions=int(counts.get(ds.id, 0)),
                        latest=to_dataset_version(ds.name, latest) if latest is not None else None,
                    )
                )
            return out

    def list_versions(self, name: str) -> list[DatasetVersion]:
        """A dataset's versions, newest first; ``DatasetNotFound`` when there is no such dataset."""
        with self.registry._session() as s:
            ds = self._dataset(s, name)
            q = select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == ds.id)
            return [to_dataset_version(name, r) for r in s.scalars(q.order_by(DatasetVersionRow.version.desc()))]

    def get_version(self, name: str, version: int | None = None) -> DatasetVersion:
        """One version (the newest when ``version`` is None); ``DatasetNotFound`` otherwise."""
        with self.registry._session() as s:
            ds = self._dataset(s, name)
            q = select(DatasetVersionRow).where(DatasetVersionRow.dataset_id == ds.id)
            if version is not None:
                q = q.where(DatasetVersionRow.version == version)
            row = s.scalars(q.order_by(DatasetVersionRow.version.desc()).limit(1)).first()
            if row is None:
                what = f"version {version}" if version is not None else "any version"
                raise DatasetNotFound(f"dataset {name!r} has no {what}")
            return to_dataset_version(name, row)

    @staticmethod
    def _dataset(s: Any, name: str) -> DatasetRow:
        ds = s.scalars(select(DatasetRow).where(DatasetRow.name == name)).first()
        if ds is None:
            raise DatasetNotFound(f"no dataset named {name!r}")
        return ds  # type: ignore[no-any-return]
