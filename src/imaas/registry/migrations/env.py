"""Alembic environment: runs on the connection imaas hands it (never reads alembic.ini)."""

from __future__ import annotations

from alembic import context

from imaas.registry.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
