"""The store's schema on every backend: migrated to head once, then left alone.

test_store_migrations.py checks the same on the SQLite file itself; these go through SQLAlchemy
only, so that they also run on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text
from store_backends import POSTGRESQL, open_store_with_own_tmpdir
from store_helpers import deployment_args, own_engine, run_in_processes

import zserve.store.migrating as migrating_module
from zserve.errors import UsageError
from zserve.store import Store
from zserve.store.schema import SCHEMA_HEAD, alembic_config

PROCESSES = 4


def _versions(url: str) -> list[str]:
    with own_engine(url) as engine, engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def test_fresh_database_is_migrated_to_head(store_url: str, store_backend: str) -> None:
    with Store(store_url) as store:
        assert store.migrated is True
        assert store.current_revision() == SCHEMA_HEAD
    assert _versions(store_url) == [SCHEMA_HEAD]
    with own_engine(store_url) as engine:
        schema = inspect(engine)
        assert {"alembic_version", "deployments"} <= set(schema.get_table_names())
        assert schema.get_pk_constraint("deployments")["constrained_columns"] == ["id"]
        uniques = schema.get_unique_constraints("deployments")
        assert [(u["name"], u["column_names"]) for u in uniques] == [
            ("uq_deployments_name_version", ["name", "version"])
        ]
        indexes = {i["name"]: i["column_names"] for i in schema.get_indexes("deployments")}
        assert indexes.get("ix_deployments_name") == ["name"]
        columns = {c["name"]: c for c in schema.get_columns("deployments")}
    # only the snapshot columns are optional: deployments made before snapshots have none
    nullable = {name for name, column in columns.items() if column["nullable"]}
    assert nullable == {"code_archive", "environment"}
    if store_backend == POSTGRESQL:
        assert columns["created_at"]["type"].timezone is True  # timestamptz


def test_up_to_date_database_is_not_migrated_again(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(store_url) as first:
        assert first.migrated is True
        first.add_deployment(**deployment_args())

    def no_lock(path: Path) -> None:
        raise AssertionError(f"took the migration lock {path} on an up-to-date database")

    monkeypatch.setattr(migrating_module, "exclusive_lock", no_lock)
    with Store(store_url) as second:
        assert second.migrated is False
        assert second.current_revision() == SCHEMA_HEAD
        assert [r.ref for r in second.list_deployments()] == ["weather:1"]
    assert _versions(store_url) == [SCHEMA_HEAD]


def test_database_behind_head_is_upgraded(store_url: str) -> None:
    Store(store_url).close()
    command.downgrade(alembic_config(store_url), "base")
    assert _versions(store_url) == []
    with own_engine(store_url) as engine:
        assert "deployments" not in inspect(engine).get_table_names()
    with Store(store_url) as store:
        assert store.migrated is True
        assert store.current_revision() == SCHEMA_HEAD
        assert store.list_deployments() == []
        record, created = store.add_deployment(**deployment_args())
        assert (record.version, created) == (1, True)


def test_database_from_a_newer_zserve_is_refused(store_url: str) -> None:
    Store(store_url).close()
    with own_engine(store_url) as engine, engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(UsageError, match=r"'9999'.*newer zserve"):
        Store(store_url)
    assert _versions(store_url) == ["9999"]


def test_processes_on_separate_hosts_migrate_a_fresh_database_once(
    store_url: str, tmp_path: Path
) -> None:
    # Each process has a lock directory of its own, as on separate hosts sharing one database:
    # on PostgreSQL only the advisory lock keeps them from migrating at the same time.
    tmpdirs = [tmp_path / f"host-{i}" for i in range(PROCESSES)]
    for tmpdir in tmpdirs:
        tmpdir.mkdir()
    results = run_in_processes(
        open_store_with_own_tmpdir, [(store_url, str(tmpdir)) for tmpdir in tmpdirs]
    )
    assert [revision for _, revision in results] == [SCHEMA_HEAD] * PROCESSES
    assert sum(migrated for migrated, _ in results) == 1
    assert _versions(store_url) == [SCHEMA_HEAD]
