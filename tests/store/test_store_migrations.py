"""The store's schema: Alembic migrations shipped in the package, run only when behind."""

from __future__ import annotations

import io
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from zserve.errors import UsageError
from zserve.store import Store
from zserve.store.models import Base
from zserve.store.schema import MIGRATIONS_DIR, SCHEMA_HEAD, alembic_config, head_revision


def _db_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def _sqlite_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(_db_path(url))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_schema_head_constant_matches_the_shipped_migrations() -> None:
    assert head_revision() == SCHEMA_HEAD == "0004"
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()


def test_fresh_database_is_created_and_migrated_to_head(store_url: str) -> None:
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    level_before = root.level
    alembic_level = logging.getLogger("alembic").level

    assert not _db_path(store_url).parent.exists()
    with Store(store_url) as store:
        assert store.migrated is True
        assert store.current_revision() == SCHEMA_HEAD

    assert _sqlite_rows(store_url, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]
    tables = {row[0] for row in _sqlite_rows(store_url, "SELECT name FROM sqlite_master")}
    assert {"alembic_version", "deployments", "ix_deployments_name"} <= tables
    assert _sqlite_rows(store_url, "PRAGMA journal_mode") == [("wal",)]
    assert _db_path(store_url).with_name("zserve.db.lock").exists()
    # Alembic did not reconfigure the application's logging.
    assert root.handlers == handlers_before
    assert root.level == level_before
    assert logging.getLogger("alembic").level == alembic_level


def test_connections_use_wal_normal_sync_and_a_busy_timeout(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_up_to_date_database_is_not_migrated_again(store_url: str) -> None:
    with Store(store_url) as first:
        assert first.migrated is True
    # Taking the migration lock now would fail: its path is a directory.
    lock = _db_path(store_url).with_name("zserve.db.lock")
    lock.unlink()
    lock.mkdir()
    with Store(store_url) as second:
        assert second.migrated is False
        assert second.current_revision() == SCHEMA_HEAD
    assert _sqlite_rows(store_url, "SELECT version_num FROM alembic_version") == [(SCHEMA_HEAD,)]


def test_opening_an_up_to_date_database_does_not_import_alembic(store_url: str) -> None:
    Store(store_url).close()
    code = (
        "import sys\n"
        "from zserve.store import Store\n"
        f"store = Store({store_url!r})\n"
        "assert store.migrated is False\n"
        "print(sorted(m for m in sys.modules if m == 'alembic' or m.startswith('alembic.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_database_behind_head_is_upgraded(store_url: str) -> None:
    Store(store_url).close()
    command.downgrade(alembic_config(store_url), "base")
    assert _sqlite_rows(store_url, "SELECT version_num FROM alembic_version") == []
    with Store(store_url) as store:
        assert store.migrated is True
        assert store.current_revision() == SCHEMA_HEAD
        assert store.list_deployments() == []


def test_database_from_a_newer_zserve_is_refused(store_url: str) -> None:
    Store(store_url).close()
    conn = sqlite3.connect(_db_path(store_url))
    with conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    conn.close()
    with pytest.raises(UsageError, match=r"'9999'.*newer zserve"):
        Store(store_url)


def test_models_match_the_migrations(store: Store) -> None:
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_migrations_render_for_postgresql() -> None:
    buffer = io.StringIO()
    cfg = alembic_config("postgresql+psycopg://zserve:p%40ss@db.example/zserve")
    cfg.output_buffer = buffer
    command.upgrade(cfg, "head", sql=True)
    command.downgrade(cfg, f"{SCHEMA_HEAD}:base", sql=True)
    sql = buffer.getvalue()
    assert "CREATE TABLE deployments" in sql
    assert "created_at TIMESTAMP WITH TIME ZONE NOT NULL" in sql
    assert "spec JSON NOT NULL" in sql
    assert "CONSTRAINT uq_deployments_name_version UNIQUE (name, version)" in sql
    assert "CREATE INDEX ix_deployments_name ON deployments (name)" in sql
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in sql
    assert "DROP TABLE deployments" in sql
    # 0002: the tables of recorded runs.
    for table in ("runs", "steps", "artifacts", "run_metadata"):
        assert f"CREATE TABLE {table} (" in sql
        assert f"DROP TABLE {table}" in sql
    assert "started_at DOUBLE PRECISION NOT NULL" in sql
    assert "data BYTEA" in sql
    assert "FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE" in sql
    assert "CREATE INDEX ix_artifacts_path ON artifacts (path)" in sql
    assert f"UPDATE alembic_version SET version_num='{SCHEMA_HEAD}'" in sql
