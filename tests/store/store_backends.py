"""The databases the store tests run on: a SQLite file, and PostgreSQL when a server is given.

``ZSERVE_TEST_POSTGRES_URL`` names a PostgreSQL database whose role may create databases;
``scripts/test-services`` starts such a server and prints the variable. Each test gets a database
of its own, created through that URL and dropped afterwards.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

POSTGRES_URL_ENV = "ZSERVE_TEST_POSTGRES_URL"

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = (SQLITE, POSTGRESQL)

SKIP_REASON = (
    f"{POSTGRES_URL_ENV} is not set: run scripts/test, or "
    '`eval "$(scripts/test-services)"` first, to test the store on PostgreSQL too'
)

#: Databases made here are named with this prefix (lower case: PostgreSQL folds names).
DATABASE_PREFIX = "zserve_test_"


def postgres_admin_url() -> str | None:
    """The PostgreSQL URL the tests were given, or None."""
    return os.environ.get(POSTGRES_URL_ENV) or None


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory}/home/zserve.db"


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``admin_url``: its URL; dropped on exit."""
    admin = make_url(admin_url)
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            _drop_database(engine, name)
    finally:
        engine.dispose()


def _drop_database(engine: Engine, name: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with engine.connect() as conn:
                # FORCE (PostgreSQL 13+): a connection a failed test left open must not stop it.
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except DBAPIError as exc:
            # An autovacuum worker busy in the new database: FORCE may not terminate it (it
            # is not the test role's process), but it finishes in a moment.
            if "pg_signal_backend" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


# -- run in child processes (multiprocessing, spawn) ---------------------------------------------


def open_store_with_own_tmpdir(url: str, tmpdir: str) -> tuple[bool, str | None]:
    """Open the store as a process on another host would: its own temporary directory, so its own
    migration lock file (the lock of a SQLite store lies beside the database file anyway)."""
    import tempfile

    from store_helpers import open_store

    tempfile.tempdir = tmpdir
    return open_store(url)
