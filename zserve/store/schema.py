"""Opening the store's database and keeping its schema current: the Alembic migrations shipped
in this package, the revision a database is at, SQLite's connection settings, and the locks
taken while migrating."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import URL

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "LOCK_KEY",
    "MIGRATIONS_DIR",
    "SCHEMA_HEAD",
    "SQLITE_BUSY_TIMEOUT_MS",
    "alembic_config",
    "configure_sqlite",
    "current_revision",
    "exclusive_lock",
    "head_revision",
    "sqlite_file",
]

#: The Alembic script directory shipped inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: The head revision of the shipped migrations. Kept here so that opening an up-to-date store
#: never imports Alembic (~0.1 s); a test checks it against the script directory. Bump it with
#: every new migration.
SCHEMA_HEAD = "0001"

#: How long a SQLite connection waits for another writer before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000


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


def configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # The busy timeout first: switching to WAL briefly needs an exclusive lock.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
