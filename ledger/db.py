"""Database plumbing for the ledger: URL resolution, engines, portable SQL bits.

* :func:`resolve_url` -- explicit URL -> the ``db_url`` setting (``ORCHESTRA_DB_URL``) ->
  ``sqlite:///<home>/orchestra.db`` (the ``home`` setting, ``ORCHESTRA_HOME``, default
  ``~/.orchestra``, created).
* :func:`make_engine` -- SQLite gets WAL, ``synchronous=NORMAL``, a busy timeout,
  enforced foreign keys and real transactions (``BEGIN`` / ``BEGIN IMMEDIATE``
  for writers, see :data:`WRITE`); PostgreSQL gets psycopg2 with pre-ping.
* :func:`day_of` -- ``YYYY-MM-DD`` (UTC) of a timestamp column, on both backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import String, create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import StaticPool

from core.settings import settings
from sqlalchemy.sql.functions import FunctionElement

__all__ = [
    "resolve_url",
    "normalize_url",
    "orchestra_home",
    "make_engine",
    "is_sqlite",
    "is_memory_sqlite",
    "day_of",
    "WRITE",
    "SQLITE_BUSY_TIMEOUT_MS",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE
# (take the write lock up front, so a read-then-write transaction never fails
# with SQLITE_BUSY halfway).  Ignored by other backends.
WRITE = {"orchestra_write": True}


def orchestra_home(create: bool = True) -> Path:
    return settings().home_dir() if create else settings().home


def normalize_url(url: str | URL) -> URL:
    """Parse a URL and map driver aliases onto the sync drivers the store uses.

    ``postgres://`` and ``postgresql://`` / ``postgresql+asyncpg://`` ->
    ``postgresql+psycopg2://``; ``sqlite+aiosqlite://`` -> ``sqlite://``.
    """
    u = make_url(url) if isinstance(url, str) else url
    name = u.drivername
    if name in ("postgres", "postgresql", "postgresql+asyncpg", "postgres+psycopg2"):
        u = u.set(drivername="postgresql+psycopg2")
    elif name == "sqlite+aiosqlite":
        u = u.set(drivername="sqlite")
    return u


def resolve_url(url: str | URL | None = None) -> URL:
    """The store URL: ``url`` -> the ``db_url`` setting -> SQLite in the home folder."""
    if url is None or (isinstance(url, str) and not url.strip()):
        url = settings().db_url
    if url is None:
        path = orchestra_home(create=True) / "orchestra.db"
        return URL.create("sqlite", database=str(path))
    u = normalize_url(url.strip() if isinstance(url, str) else url)
    if is_sqlite(u) and not is_memory_sqlite(u):
        # A file path: make its folder, as for the default store.
        db = u.database or ""
        if not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            if db.startswith("~"):
                u = u.set(database=str(Path(db).expanduser()))
    return u


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def is_memory_sqlite(url: URL) -> bool:
    if not is_sqlite(url):
        return False
    db = url.database or ""
    return db in ("", ":memory:") or "mode=memory" in db


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    u = normalize_url(url)
    if is_sqlite(u):
        return _sqlite_engine(u, **kwargs)
    if u.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": 10, "application_name": "orchestra"}
        connect_args.update(kwargs.pop("connect_args", {}))
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(u, connect_args=connect_args, **kwargs)
    return create_engine(u, **kwargs)


def _sqlite_engine(u: URL, **kwargs: Any) -> Engine:
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    connect_args.update(kwargs.pop("connect_args", {}))
    if is_memory_sqlite(u):
        # One shared connection, or every pool connection sees its own empty DB.
        kwargs.setdefault("poolclass", StaticPool)
    engine = create_engine(u, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (the
        # documented recipe), so reads and DDL are transactional as well.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("orchestra_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _wal(cur: Any) -> None:
    """Switch to WAL. On a new file several first connections race for it, and SQLite can
    answer "database is locked" at once, without its busy handler: try again for a while."""
    import sqlite3
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class day_of(FunctionElement[str]):
    """``'YYYY-MM-DD'`` of a UTC timestamp column, as text, on every backend."""

    type = String()
    inherit_cache = True
    name = "day_of"


@compiles(day_of)
def _day_of_default(element: day_of, compiler: Any, **kw: Any) -> str:
    (col,) = element.clauses
    return f"CAST(CAST({compiler.process(col, **kw)} AS DATE) AS VARCHAR(10))"


@compiles(day_of, "sqlite")
def _day_of_sqlite(element: day_of, compiler: Any, **kw: Any) -> str:
    # UTCDateTime stores naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'.
    (col,) = element.clauses
    return f"substr({compiler.process(col, **kw)}, 1, 10)"


@compiles(day_of, "postgresql")
def _day_of_postgresql(element: day_of, compiler: Any, **kw: Any) -> str:
    (col,) = element.clauses
    return f"to_char(({compiler.process(col, **kw)}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
