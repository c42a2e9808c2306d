"""Opening the store's database and keeping its schema current: the Alembic migrations shipped
in this package, the revision a database is at, SQLite's connection settings and transactions,
and the locks taken while migrating.

SQLite transactions. pysqlite's own transaction handling is switched off (``isolation_level =
None``) and SQLAlchemy's ``begin`` event emits the BEGIN instead (the recipe of SQLAlchemy's
SQLite documentation, "Transactions with SQLite and the sqlite3 driver"): a plain ``BEGIN`` for a
read, ``BEGIN IMMEDIATE`` for a connection whose execution options carry ``WRITE_OPTION``. A
write transaction thus takes the write lock at its start, where SQLite waits for it up to the
busy timeout. A deferred transaction that reads first and writes later would instead have to
upgrade a read lock, and SQLite answers that upgrade with SQLITE_BUSY at once ("database is
locked"), without waiting. Reads get a real transaction too, so the several SELECTs of one read
see one snapshot.
"""

from __future__ import annotations

import fcntl
import hashlib
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "LOCK_KEY",
    "MIGRATIONS_DIR",
    "PG_CONNECT_TIMEOUT_S",
    "SCHEMA_HEAD",
    "SQLITE_BUSY_TIMEOUT_MS",
    "WRITE_OPTION",
    "alembic_config",
    "begin_sqlite",
    "configure_sqlite",
    "create_store_engine",
    "current_revision",
    "exclusive_lock",
    "head_revision",
    "listen_sqlite",
    "sqlite_file",
]

#: The Alembic script directory shipped inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: The head revision of the shipped migrations. Kept here so that opening an up-to-date store
#: never imports Alembic (~0.1 s); a test checks it against the script directory. Bump it with
#: every new migration.
SCHEMA_HEAD = "0004"

#: How long a SQLite connection waits for another writer before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: How long connecting to PostgreSQL may take before the store counts as unavailable (seconds).
PG_CONNECT_TIMEOUT_S = 5

#: The execution option that makes a SQLite transaction begin with ``BEGIN IMMEDIATE``.
WRITE_OPTION = "zserve_write"

_SQLITE_BUSY = 5


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` built in code (no alembic.ini): the package's migrations, ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolates "%": a password may contain one.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest revision of the shipped migrations, read from the script directory."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


#: Key of the PostgreSQL advisory lock taken while migrating.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"zserve.store.migrate").digest()[:8], "big") >> 1


def current_revision(conn: Connection) -> str | None:
    """What Alembic's ``MigrationContext.getcurrent_revision`` answers, without importing it."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    versions = sorted(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    if not versions:
        return None
    # Several heads (branches) never equal SCHEMA_HEAD: Alembic sorts them out under the lock.
    return ",".join(versions)


def sqlite_file(url: URL) -> Path | None:
    """The database file of a file-based SQLite URL, else None."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    if url.query.get("mode") == "memory":
        return None
    return Path(database).expanduser().absolute()


def create_store_engine(url: URL) -> Engine:
    """The engine of the store at ``url``: SQLite gets ``listen_sqlite``; PostgreSQL a connect
    timeout (unless the URL sets one) and a liveness check of pooled connections, so that a
    stopped server fails fast and a restarted one is reconnected to."""
    options: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        options["pool_pre_ping"] = True
        if url.get_driver_name() in ("psycopg", "psycopg2") and "connect_timeout" not in url.query:
            options["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    engine = create_engine(url, **options)
    if url.get_backend_name() == "sqlite":
        listen_sqlite(engine)
    return engine


def configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    """The ``connect`` hook: busy timeout, WAL, synchronous=NORMAL, foreign keys, and no
    transactions of pysqlite's own (``begin_sqlite`` emits them)."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, retried while SQLite answers SQLITE_BUSY.

    On a database that is already in WAL mode this only reads. The switch itself (once per file)
    takes a read lock and then upgrades it to an exclusive one, and SQLite answers that upgrade
    with SQLITE_BUSY at once, whatever the busy timeout, when another connection reads at that
    moment: processes opening a fresh file together hit it. The switch is idempotent, so it is
    tried again, with a short random pause, until the busy timeout has passed.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", _SQLITE_BUSY) & 0xFF
            if code != _SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(random.uniform(0, pause))
        pause = min(pause * 2, 0.05)


def begin_sqlite(conn: Connection) -> None:
    """The ``begin`` hook: BEGIN IMMEDIATE for a write connection (``WRITE_OPTION``), else BEGIN."""
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def listen_sqlite(engine: Engine) -> None:
    """Install ``configure_sqlite`` and ``begin_sqlite`` on a SQLite engine (both or neither:
    without the ``begin`` hook every statement would commit on its own)."""
    event.listen(engine, "connect", configure_sqlite)
    event.listen(engine, "begin", begin_sqlite)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
