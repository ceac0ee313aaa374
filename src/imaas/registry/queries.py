"""Reads of the SQL registry: rows turned into domain types, routes, what must stay loaded.

ORM rows never leave the registry package: every function here that a public method
returns from hands back ``imaas.domain`` types. Reads that decide a route (``resolve_route``)
are one ``SELECT`` with outer joins, so a concurrent promote is seen entirely or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from imaas.domain import PRODUCTION, AliasRoute, ModelRecord, ModelRef, ModelVersion, Route
from imaas.errors import AliasNotFound, ModelNotFound, VersionNotFound
from imaas.registry.tables import AliasRow, ModelRow, VersionRow
from imaas.schemas.manifest import Manifest


def aware(dt: datetime) -> datetime:
    """``dt`` with UTC attached when the database handed it back naive (SQLite)."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def to_version(name: str, row: VersionRow) -> ModelVersion:
    """The domain form of a version row of model ``name``."""
    return ModelVersion(
        model=name,
        version=row.version,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        manifest=Manifest.model_validate(row.manifest),
        created_at=aware(row.created_at),
        metrics=dict(row.metrics or {}),
        source=row.source,
        parent_version=row.parent_version,
        dataset=row.dataset,
        job_id=row.job_id,
        description=row.description,
        tags=dict(row.tags or {}),
    )


def model_row(s: Session, name: str) -> ModelRow:
    """The model named ``name``; ``ModelNotFound``."""
    row = s.scalar(select(ModelRow).where(ModelRow.name == name))
    if row is None:
        raise ModelNotFound(f"no model named {name!r}")
    return row


def version_row(s: Session, model: ModelRow, version: int) -> VersionRow:
    """Version ``version`` of ``model``; ``VersionNotFound``."""
    row = s.scalar(select(VersionRow).where(VersionRow.model_id == model.id, VersionRow.version == version))
    if row is None:
        raise VersionNotFound(f"model {model.name!r} has no version {version}")
    return row


def alias_row(s: Session, model: ModelRow, alias: str) -> AliasRow:
    """Alias ``alias`` of ``model``; ``AliasNotFound``."""
    row = s.scalar(select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.name == alias))
    if row is None:
        raise AliasNotFound(f"model {model.name!r} has no alias {alias!r}")
    return row


def routes(s: Session, model_ids: list[int]) -> dict[int, dict[str, AliasRoute]]:
    """Each model's aliases with their canary and shadow, by model id, in one query."""
    out: dict[int, dict[str, AliasRoute]] = {mid: {} for mid in model_ids}
    if not model_ids:
        return out
    primary, canary, shadow, shadow_model = (
        aliased(VersionRow),
        aliased(VersionRow),
        aliased(VersionRow),
        aliased(ModelRow),
    )
    q = (
        select(
            AliasRow.model_id,
            AliasRow.name,
            primary.version,
            canary.version,
            AliasRow.canary_weight,
            shadow_model.name,
            shadow.version,
            AliasRow.shadow_weight,
        )
        .join(primary, primary.id == AliasRow.version_id)
        .outerjoin(canary, canary.id == AliasRow.canary_version_id)
        .outerjoin(shadow, shadow.id == AliasRow.shadow_version_id)
        .outerjoin(shadow_model, shadow_model.id == shadow.model_id)
        .where(AliasRow.model_id.in_(model_ids))
        .order_by(AliasRow.name)
    )
    for mid, alias, version, canary_v, canary_w, shadow_m, shadow_v, shadow_w in s.execute(q):
        out[mid][alias] = AliasRoute(
            alias=alias,
            version=version,
            canary_version=canary_v,
            canary_weight=canary_w if canary_v is not None else 0.0,
            shadow_model=shadow_m,
            shadow_version=shadow_v,
            shadow_weight=shadow_w if shadow_v is not None else 0.0,
        )
    return out


def alias_route(s: Session, model: ModelRow, alias: str) -> AliasRoute:
    """One alias's route; ``AliasNotFound``."""
    found = routes(s, [model.id])[model.id].get(alias)
    if found is None:
        raise AliasNotFound(f"model {model.name!r} has no alias {alias!r}")
    return found


def records(s: Session, rows: list[ModelRow]) -> list[ModelRecord]:
    """``rows`` as ``ModelRecord``s with latest version and routes (two queries for all)."""
    ids = [r.id for r in rows]
    latest: dict[int, int] = {}
    if ids:
        q = (
            select(VersionRow.model_id, func.max(VersionRow.version))
            .where(VersionRow.model_id.in_(ids))
            .group_by(VersionRow.model_id)
        )
        latest = {mid: v for mid, v in s.execute(q)}
    by_model = routes(s, ids)
    return [
        ModelRecord(
            name=r.name,
            task=r.task,
            description=r.description,
            created_at=aware(r.created_at),
            latest_version=latest.get(r.id),
            aliases={alias: route.version for alias, route in by_model[r.id].items()},
            routes=by_model[r.id],
            tags=dict(r.tags or {}),
            keep_latest=r.keep_latest,
            price_per_1000=r.price_per_1000,
        )
        for r in rows
    ]


def resolve_route(s: Session, ref: ModelRef) -> Route:
    """``ref`` resolved for serving (see ``RegistryStore.resolve_route``).

    A version reference is one query; an alias reference one query joining the alias's
    version, canary and shadow. Only a reference without alias or version to a model without
    ``production`` takes a second query (the latest version), and only errors look further.
    """
    if ref.version is not None:
        row = s.scalar(
            select(VersionRow)
            .join(ModelRow, ModelRow.id == VersionRow.model_id)
            .where(ModelRow.name == ref.name, VersionRow.version == ref.version)
        )
        if row is None:
            model_row(s, ref.name)
            raise VersionNotFound(f"model {ref.name!r} has no version {ref.version}")
        return Route(primary=to_version(ref.name, row))
    alias = ref.alias or PRODUCTION
    found = _alias_versions(s, ref.name, alias)
    if found is not None:
        primary, canary, shadow, shadow_name, canary_weight, shadow_weight = found
        return Route(
            primary=to_version(ref.name, primary),
            alias=alias,
            canary=to_version(ref.name, canary) if canary is not None else None,
            canary_weight=canary_weight if canary is not None else 0.0,
            shadow=to_version(shadow_name, shadow) if shadow is not None and shadow_name is not None else None,
            shadow_weight=shadow_weight if shadow is not None else 0.0,
        )
    model = model_row(s, ref.name)
    if ref.alias is not None:
        raise AliasNotFound(f"model {ref.name!r} has no alias {alias!r}")
    latest = s.scalar(
        select(VersionRow).where(VersionRow.model_id == model.id).order_by(VersionRow.version.desc()).limit(1)
    )
    if latest is None:
        raise VersionNotFound(f"model {ref.name!r} has no versions")
    return Route(primary=to_version(ref.name, latest))


def _alias_versions(
    s: Session, name: str, alias: str
) -> tuple[VersionRow, VersionRow | None, VersionRow | None, str | None, float, float] | None:
    """The alias's version, canary, shadow (with its model's name) and weights, in one query."""
    primary, canary, shadow, shadow_model = (
        aliased(VersionRow),
        aliased(VersionRow),
        aliased(VersionRow),
        aliased(ModelRow),
    )
    q = (
        select(primary, canary, shadow, shadow_model.name, AliasRow.canary_weight, AliasRow.shadow_weight)
        .select_from(AliasRow)
        .join(ModelRow, ModelRow.id == AliasRow.model_id)
        .join(primary, primary.id == AliasRow.version_id)
        .outerjoin(canary, canary.id == AliasRow.canary_version_id)
        .outerjoin(shadow, shadow.id == AliasRow.shadow_version_id)
        .outerjoin(shadow_model, shadow_model.id == shadow.model_id)
        .where(ModelRow.name == name, AliasRow.name == alias)
    )
    row = s.execute(q).first()
    if row is None:
        return None
    primary_row, canary_row, shadow_row, shadow_name, canary_weight, shadow_weight = row
    return primary_row, canary_row, shadow_row, shadow_name, canary_weight, shadow_weight


def aliased_versions(s: Session, alias: str) -> list[ModelVersion]:
    """Every version ``alias`` points at, one per model, by model name."""
    q = (
        select(ModelRow.name, VersionRow)
        .join(AliasRow, AliasRow.version_id == VersionRow.id)
        .join(ModelRow, ModelRow.id == AliasRow.model_id)
        .where(AliasRow.name == alias)
        .order_by(ModelRow.name)
    )
    return [to_version(name, row) for name, row in s.execute(q)]


def pinned_versions(s: Session) -> set[tuple[str, int]]:
    """Every alias, canary and shadow target, and each model's ``keep_latest`` newest versions."""
    pinned: set[tuple[str, int]] = set()
    names = {
        mid: name
        for mid, name in s.execute(select(ModelRow.id, ModelRow.name).where(ModelRow.id.in_(select(AliasRow.model_id))))
    }
    for model_id, route_map in routes(s, list(names)).items():
        name = names[model_id]
        for route in route_map.values():
            pinned.add((name, route.version))
            if route.canary_version is not None:
                pinned.add((name, route.canary_version))
            if route.shadow_model is not None and route.shadow_version is not None:
                pinned.add((route.shadow_model, route.shadow_version))
    rank = func.row_number().over(partition_by=VersionRow.model_id, order_by=VersionRow.version.desc()).label("rank")
    newest = (
        select(ModelRow.name, VersionRow.version, ModelRow.keep_latest, rank)
        .join(ModelRow, ModelRow.id == VersionRow.model_id)
        .where(ModelRow.keep_latest > 0)
        .subquery()
    )
    q = select(newest.c.name, newest.c.version).where(newest.c.rank <= newest.c.keep_latest)
    pinned.update((name, version) for name, version in s.execute(q))
    return pinned


def version_users(s: Session, version: VersionRow) -> list[str]:
    """What points at ``version``: aliases, canaries and shadows of any model, in words."""
    q = (
        select(ModelRow.name, AliasRow)
        .join(ModelRow, ModelRow.id == AliasRow.model_id)
        .where(
            or_(
                AliasRow.version_id == version.id,
                AliasRow.canary_version_id == version.id,
                AliasRow.shadow_version_id == version.id,
            )
        )
        .order_by(ModelRow.name, AliasRow.name)
    )
    users: list[str] = []
    for model, alias in s.execute(q):
        if alias.version_id == version.id:
            users.append(f"alias {alias.name!r} of {model!r}")
        if alias.canary_version_id == version.id:
            users.append(f"the canary of {model}:{alias.name}")
        if alias.shadow_version_id == version.id:
            users.append(f"the shadow of {model}:{alias.name}")
    return users
