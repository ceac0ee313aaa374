"""Security and billing: API keys, daily usage, the audit log and model prices.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

- ``api_keys``: hashed keys with scopes, model patterns, limits, expiry, revocation and
  rotation; ``seq`` (the change sequence of the key's last change) lets every server
  refresh its key table incrementally.
- ``usage_daily``: requests, images, compute milliseconds and bytes per key x model x
  version x task x UTC day.
- ``audit_log``: privileged actions, append-only.
- ``models.price_per_1000``: what 1,000 predicted images of the model cost, an exact decimal
  (``Numeric(18, 6)``: up to 1,000,000,000 with 6 decimal places; never a float).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the key, usage and audit tables and the price column."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("models", sa.JSON),
        sa.Column("limits", sa.JSON, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("replaced_by", sa.String(32)),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_api_keys_seq", "api_keys", ["seq"])
    op.create_table(
        "usage_daily",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("images", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("compute_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("bytes_in", sa.BigInteger, nullable=False, server_default="0"),
        sa.UniqueConstraint("key_id", "model", "version", "task", "day", name="uq_usage_daily"),
    )
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(32)),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False, server_default="{}"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("price_per_1000", sa.Numeric(18, 6)))


def downgrade() -> None:
    """Back to 0002: keys, usage, the audit log and prices are dropped."""
    with op.batch_alter_table("models") as batch:
        batch.drop_column("price_per_1000")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_usage_daily_day", table_name="usage_daily")
    op.drop_table("usage_daily")
    op.drop_index("ix_api_keys_seq", table_name="api_keys")
    op.drop_table("api_keys")
