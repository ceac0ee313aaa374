"""Model lifecycle: cards, canary and shadow routes, the change sequence and model history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

- ``models``: ``tags``, ``keep_latest``, and ``last_version`` (the highest number ever
  given, so a deleted version's number is never given again).
- ``model_versions``: ``description``, ``tags``; ``parent_version_id`` (a foreign key that
  would forbid deleting a parent) becomes ``parent_version``, the parent's number.
- ``aliases``: ``shadow_version_id`` and ``shadow_weight`` beside the canary.
- ``model_events`` replaces ``alias_events``: every change, by model name and version
  numbers (history outlives deleted versions), numbered by the change sequence ``seq``
  kept in the single-row ``registry_state``. Old alias moves become ``alias`` events whose
  ``seq`` is their old id, so they keep their order.
- ``artifact_tombstones``: bytes no version uses any more, removed later by the sweeper
  (never under the registry lock on a request's path).
"""

from typing import Literal

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MOVE_ACTIONS = ("alias", "promote", "rollback")


def _recreate() -> Literal["always", "auto"]:
    """SQLite cannot add a foreign key to a table in place: rebuild it there, alter it elsewhere."""
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade() -> None:
    """Add the lifecycle columns and tables and move the alias history into ``model_events``."""
    op.create_table(
        "model_events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("alias", sa.String(32)),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer),
        sa.Column("actor", sa.String(255)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False, server_default="{}"),
    )
    op.create_index("ix_model_events_model_seq", "model_events", ["model", "seq"])
    op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint("id = 1", name="ck_registry_state_single_row"),
    )
    op.execute(
        "INSERT INTO model_events (seq, model, action, alias, from_version, to_version, actor, at) "
        "SELECT e.id, m.name, 'alias', e.alias, p.version, v.version, e.actor, e.at "
        "FROM alias_events e JOIN models m ON m.id = e.model_id "
        "JOIN model_versions v ON v.id = e.version_id "
        "LEFT JOIN model_versions p ON p.id = e.previous_version_id"
    )
    op.execute("INSERT INTO registry_state (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM model_events")
    op.create_table(
        "artifact_tombstones",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True)),
    )
    op.drop_index("ix_alias_events_model_id", table_name="alias_events")
    op.drop_table("alias_events")

    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("tags", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("keep_latest", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_version", sa.Integer, nullable=False, server_default="0"))
    op.execute(
        "UPDATE models SET last_version = "
        "COALESCE((SELECT MAX(v.version) FROM model_versions v WHERE v.model_id = models.id), 0)"
    )

    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("parent_version", sa.Integer))
        batch.add_column(sa.Column("description", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("tags", sa.JSON, nullable=False, server_default="{}"))
    op.execute(
        "UPDATE model_versions SET parent_version = "
        "(SELECT p.version FROM model_versions p WHERE p.id = model_versions.parent_version_id)"
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("parent_version_id")

    with op.batch_alter_table("aliases", recreate=_recreate()) as batch:
        batch.add_column(
            sa.Column(
                "shadow_version_id",
                sa.Integer,
                sa.ForeignKey("model_versions.id", name="fk_aliases_shadow_version_id"),
            )
        )
        batch.add_column(sa.Column("shadow_weight", sa.Float, nullable=False, server_default="0"))


def downgrade() -> None:
    """Back to 0001: alias moves whose versions still exist return to ``alias_events``;
    every other event, the cards, shadows and the numbers of deleted parents are dropped,
    and so are the tombstones: files still waiting for the sweeper stay in the artifact
    store, unused (harmless; a push of the same bytes reuses them)."""
    op.drop_table("artifact_tombstones")

    with op.batch_alter_table("aliases", recreate=_recreate()) as batch:
        batch.drop_column("shadow_weight")
        batch.drop_column("shadow_version_id")

    with op.batch_alter_table("model_versions", recreate=_recreate()) as batch:
        # the name PostgreSQL gave the 0001 constraint (batch mode needs one on SQLite)
        parent_fk = sa.ForeignKey("model_versions.id", name="model_versions_parent_version_id_fkey")
        batch.add_column(sa.Column("parent_version_id", sa.Integer, parent_fk))
    op.execute(
        "UPDATE model_versions SET parent_version_id = (SELECT p.id FROM model_versions p "
        "WHERE p.model_id = model_versions.model_id AND p.version = model_versions.parent_version)"
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("tags")
        batch.drop_column("description")
        batch.drop_column("parent_version")

    with op.batch_alter_table("models") as batch:
        batch.drop_column("last_version")
        batch.drop_column("keep_latest")
        batch.drop_column("tags")

    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("alias", sa.String(32), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("previous_version_id", sa.Integer, sa.ForeignKey("model_versions.id")),
        sa.Column("actor", sa.String(255)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_alias_events_model_id", "alias_events", ["model_id"])
    op.execute(
        "INSERT INTO alias_events (model_id, alias, version_id, previous_version_id, actor, at) "
        "SELECT m.id, e.alias, v.id, p.id, e.actor, e.at "
        "FROM model_events e JOIN models m ON m.name = e.model "
        "JOIN model_versions v ON v.model_id = m.id AND v.version = e.to_version "
        "LEFT JOIN model_versions p ON p.model_id = m.id AND p.version = e.from_version "
        f"WHERE e.action IN {MOVE_ACTIONS!r} ORDER BY e.seq"
    )
    op.drop_table("registry_state")
    op.drop_index("ix_model_events_model_seq", table_name="model_events")
    op.drop_table("model_events")
