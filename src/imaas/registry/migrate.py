"""Bringing the registry database to the schema this code needs, once, however many start.

Several replicas (or CLI commands) may start against one fresh database at the same time.
``upgrade_schema`` runs Alembic inside one write transaction that first takes a lock every
starter shares (PostgreSQL: a transaction-level advisory lock; SQLite: ``BEGIN IMMEDIATE``),
so the first one migrates and the others, let in after it committed, find the schema
current and do nothing. ``check_schema`` is the read-only alternative for processes that
must not change the schema (``open_registry(url, migrate=False)``).

Example::

    engine = make_engine("postgresql://postgres@db/imaas")
    upgrade_schema(engine)     # or check_schema(engine) to refuse an old database
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from imaas.errors import Conflict
from imaas.registry.engine import writer

MIGRATIONS = Path(__file__).with_name("migrations")

MIGRATION_LOCK_KEY = 0x696D_6161_735F_6462  # b"imaas_db": one key for every imaas replica
"""The PostgreSQL advisory lock key that serialises concurrent schema upgrades."""


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision of the migrations shipped with this code."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the registry migrations have no head revision"
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database at ``conn`` is at; None when it was never migrated."""
    return MigrationContext.configure(conn).get_current_revision()


def _check_known(current: str | None) -> None:
    """``Conflict`` when ``current`` is a revision these migrations do not have: a newer
    imaas migrated the database, and this one can neither upgrade nor use it."""
    if current is None:
        return
    known = {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}
    if current not in known:
        raise Conflict(
            f"the registry database is at revision {current}, newer than this imaas knows "
            f"(head {head_revision()}); upgrade imaas"
        )


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (the newest by default), in one write transaction.

    PostgreSQL: ``pg_advisory_xact_lock`` first, so concurrent upgrades queue up and the
    later ones find the schema current (released at commit). SQLite: the transaction begins
    with ``BEGIN IMMEDIATE``, which serialises the same way. ``Conflict`` when a newer
    imaas already migrated the database further than these migrations go.
    """
    _migrate(engine, lambda cfg: command.upgrade(cfg, revision))


def downgrade_schema(engine: Engine, revision: str) -> None:
    """Take the database back to ``revision``, under the same lock as ``upgrade_schema``.

    Downgrades lose what the older schema cannot hold (see each revision's ``downgrade``).
    """
    _migrate(engine, lambda cfg: command.downgrade(cfg, revision))


def _migrate(engine: Engine, run: Callable[[Config], None]) -> None:
    """Run an Alembic command on one write transaction of ``engine`` holding the migration lock.

    On SQLite, foreign keys are switched off around it: rebuilding a table another table
    references (how SQLite alters columns) would otherwise fail, and ``PRAGMA
    foreign_key_check`` proves nothing broke before the commit (SQLite's documented
    procedure for table rebuilds).
    """
    cfg = _config()
    sqlite = engine.dialect.name == "sqlite"
    with writer(engine).connect() as conn:
        if sqlite:
            _sqlite_foreign_keys(conn, on=False)
        try:
            with conn.begin():
                if not sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                _check_known(current_revision(conn))
                cfg.attributes["connection"] = conn
                run(cfg)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the registry migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                _sqlite_foreign_keys(conn, on=True)


def _sqlite_foreign_keys(conn: Connection, *, on: bool) -> None:
    """Switch SQLite's foreign key enforcement for ``conn``.

    The pragma is a no-op inside a transaction, and SQLAlchemy would begin one before any
    statement it runs, so it goes to the DB-API connection directly.
    """
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None, "the connection was closed"
    cursor = dbapi.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()


def check_schema(engine: Engine) -> None:
    """Raise ``Conflict`` unless the database is at the newest revision this code knows.

    For processes started with ``migrate=False``: they must not change the schema, and
    must not run on one they do not understand either.
    """
    head = head_revision()
    with engine.connect() as conn:
        current = current_revision(conn)
    if current == head:
        return
    if current is None:
        raise Conflict(f"the registry database has no schema yet (this imaas needs {head}); run `imaas db upgrade`")
    _check_known(current)
    raise Conflict(f"the registry database is at revision {current}; run `imaas db upgrade` (this imaas needs {head})")
