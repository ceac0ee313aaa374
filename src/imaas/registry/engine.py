"""Database engines for the registry: SQLite (WAL) by default, PostgreSQL in a cluster.

SQLite in WAL mode lets readers run beside one writer, but a *deferred* transaction that
reads first and writes later fails at once with ``SQLITE_BUSY`` ("database is locked") when
another writer committed after its read began: the busy timeout cannot help, because waiting
would not make its snapshot current. So the registry takes over ``BEGIN`` (SQLAlchemy's
pysqlite recipe): a connection whose execution options carry ``WRITE_OPTION`` begins with
``BEGIN IMMEDIATE``, taking the write lock before its first read and waiting for it under the
busy timeout; every other connection begins a plain deferred transaction, so reads keep
running beside writes. PostgreSQL needs none of this and gets no SQLite-only SQL; it gets a
connect timeout instead, so a database host that stopped answering fails a request within
seconds (``is_unavailable``) rather than hanging it.

Example::

    engine = make_engine("sqlite:////tmp/imaas/registry.db", busy_timeout_s=5.0)
    with writer(engine).begin() as conn:  # BEGIN IMMEDIATE on SQLite
        ...
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

WRITE_OPTION = "imaas_write"
"""Execution option marking a connection whose transactions will write."""

DEFAULT_BUSY_TIMEOUT_S = 5.0
"""How long SQLite waits for another writer's lock before answering "database is locked"."""

DEFAULT_CONNECT_TIMEOUT_S = 5
"""How long a new PostgreSQL connection may take (unless the URL sets ``connect_timeout``)."""

# SQLite primary result codes (the low byte of extended codes such as SQLITE_BUSY_SNAPSHOT).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_ERROR = 1  # a statement SQLite refused (no such table...): a bug, not an outage
# PostgreSQL SQLSTATEs that mean "run the transaction again": serialization failure,
# deadlock detected, lock not available.
_PG_RETRYABLE = frozenset({"40001", "40P01", "55P03"})


def registry_url(url: str | URL) -> URL:
    """``url`` parsed, with PostgreSQL pointed at psycopg 3 unless a driver is named.

    SQLAlchemy's default PostgreSQL driver is psycopg2, which imaas does not install, so a
    plain ``postgresql://host/db`` means ``postgresql+psycopg://host/db`` here.

    >>> registry_url("postgresql://postgres@127.0.0.1/test").drivername
    'postgresql+psycopg'
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    """An engine for ``url``.

    SQLite gets WAL, foreign keys, ``busy_timeout_s`` and ``BEGIN IMMEDIATE`` for
    connections marked by ``writer``; PostgreSQL gets psycopg 3, pre-ping and a connect
    timeout of ``DEFAULT_CONNECT_TIMEOUT_S`` unless the URL names one.
    """
    parsed = registry_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": DEFAULT_CONNECT_TIMEOUT_S}
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # sqlite3 would BEGIN (deferred) by itself before DML and never before SELECT;
        # ``_begin`` emits every BEGIN instead.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        _use_wal(cur, busy_timeout_s)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")

    return engine


def _use_wal(cur: Any, timeout_s: float) -> None:
    """Put the database in WAL mode (it stays so). Switching needs the database to itself,
    and SQLite answers "locked" at once, without its busy handler, when another connection
    holds it (two processes opening a new registry together, one already migrating): so
    wait here, up to the busy timeout, unless it is in WAL mode already."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def writer(engine: Engine) -> Engine:
    """``engine`` (same pool) whose transactions take SQLite's write lock when they begin."""
    return engine.execution_options(**{WRITE_OPTION: True})


def is_busy(exc: DBAPIError) -> bool:
    """Whether ``exc`` says the database was locked by others, so the transaction may be rerun.

    SQLite: ``SQLITE_BUSY``/``SQLITE_LOCKED`` ("database is locked"); PostgreSQL: a
    serialization failure, a deadlock or an unavailable lock.
    """
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    if getattr(orig, "sqlstate", None) in _PG_RETRYABLE:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database table is locked" in message


def is_unavailable(exc: DBAPIError) -> bool:
    """Whether ``exc`` says the database cannot be reached or cannot serve now (as opposed
    to a lock held by others, ``is_busy``, or a statement it refused, a bug).

    PostgreSQL: any ``OperationalError`` or ``InterfaceError`` of the driver (connection
    refused or lost, server shutting down, too many connections, disk full). SQLite: an
    ``OperationalError`` other than a refused statement (the file cannot be opened, an I/O
    error, a full disk).
    """
    if is_busy(exc) or not isinstance(exc, OperationalError | InterfaceError):
        return False
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF != _SQLITE_ERROR
    return True
