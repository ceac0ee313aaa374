"""Vector collections: which exist, the embedding model that fills each, and its table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08

- ``collections``: one row per collection (name, model, dimension, the vector store table
  that holds its items, description, creator). The vectors live in the vector store.
- Keys that held every scope before this revision (admin keys) are given the new
  ``collections:read`` and ``collections:write`` scopes; every other key keeps what it had.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_SCOPES = {
    "infer",
    "models:read",
    "models:write",
    "keys:admin",
    "usage:read",
    "jobs",
    "datasets:read",
    "datasets:write",
}
NEW_SCOPES = ["collections:read", "collections:write"]


def _keys() -> sa.TableClause:
    return sa.table("api_keys", sa.column("id", sa.String), sa.column("scopes", sa.JSON))


def upgrade() -> None:
    """Create the collections table; widen the admin keys to the new scopes."""
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("table_name", sa.String(100), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255)),
    )
    keys = _keys()
    bind = op.get_bind()
    for key_id, scopes in bind.execute(sa.select(keys.c.id, keys.c.scopes)).all():
        held = set(json.loads(scopes) if isinstance(scopes, str) else scopes)
        if held >= OLD_SCOPES:
            bind.execute(sa.update(keys).where(keys.c.id == key_id).values(scopes=sorted(held | set(NEW_SCOPES))))


def downgrade() -> None:
    """Back to 0004: the collections table is dropped (the vector tables stay in their store)
    and the new scopes are taken off every key."""
    keys = _keys()
    bind = op.get_bind()
    for key_id, scopes in bind.execute(sa.select(keys.c.id, keys.c.scopes)).all():
        held = json.loads(scopes) if isinstance(scopes, str) else scopes
        kept = [s for s in held if s not in NEW_SCOPES]
        if kept != held:
            bind.execute(sa.update(keys).where(keys.c.id == key_id).values(scopes=kept))
    op.drop_table("collections")
