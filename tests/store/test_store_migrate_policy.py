"""``Store(url, migrate=...)``, on every backend: ``auto`` migrates a schema that is behind (the
other tests of this folder), ``never`` refuses it and changes nothing, ``zserve db upgrade``'s
``upgrade`` migrates it whatever the policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text
from store_backends import SQLITE
from store_helpers import deployment_args, own_engine

from zserve.errors import StoreUnavailable, UsageError
from zserve.settings import hide_password
from zserve.store import Store
from zserve.store.revision import upgrade
from zserve.store.schema import SCHEMA_HEAD, alembic_config


def _schema(url: str) -> tuple[list[str], list[str]]:
    """(the revisions in alembic_version, the tables): what a refused open must not change."""
    with own_engine(url) as engine:
        tables = sorted(inspect(engine).get_table_names())
        if "alembic_version" not in tables:
            return [], tables
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return list(versions), tables


def test_never_refuses_a_store_behind_head_and_changes_nothing(
    store_url: str, store_backend: str
) -> None:
    if store_backend == SQLITE:
        Path(store_url.removeprefix("sqlite:///")).parent.mkdir()
    command.upgrade(alembic_config(store_url), "0002")  # what an older zserve left
    before = _schema(store_url)
    assert before[0] == ["0002"]
    with pytest.raises(StoreUnavailable) as caught:
        Store(store_url, migrate="never")
    message = str(caught.value)
    assert message == (
        f"The store at {hide_password(store_url)} is at schema revision 0002, behind this "
        f"zserve's {SCHEMA_HEAD}, and ZSERVE_STORE_MIGRATE=never: run `zserve db upgrade` "
        "(with --store URL, or ZSERVE_STORE_URL set) first"
    )
    assert caught.value.exit_code == 3
    assert _schema(store_url) == before

    # the explicit upgrade migrates it; then `never` opens it as it is
    assert upgrade(store_url) == ("0002", SCHEMA_HEAD)
    with Store(store_url, migrate="never") as store:
        assert store.migrated is False and store.current_revision() == SCHEMA_HEAD
        record, created = store.add_deployment(**deployment_args())
        assert created and store.get_deployment(record.id).ref == "weather:1"


def test_never_refuses_an_empty_database(store_url: str, store_backend: str) -> None:
    if store_backend == SQLITE:  # a SQLite file that does not exist is not made
        path = Path(store_url.removeprefix("sqlite:///"))
        with pytest.raises(StoreUnavailable, match=r"does not exist, and ZSERVE_STORE_MIGRATE="):
            Store(store_url, migrate="never")
        assert not path.parent.exists()
        path.parent.mkdir()
        path.touch()  # an empty file: a database without a schema
    with pytest.raises(StoreUnavailable) as caught:
        Store(store_url, migrate="never")
    assert "is at no schema (an empty database), behind this zserve's" in str(caught.value)
    assert "run `zserve db upgrade`" in str(caught.value)
    assert _schema(store_url) == ([], [])


def test_never_still_refuses_a_store_of_a_newer_zserve(store_url: str) -> None:
    Store(store_url).close()
    with own_engine(store_url) as engine, engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(UsageError, match=r"'9999'.*newer zserve"):
        Store(store_url, migrate="never")


def test_an_unknown_policy_is_a_usage_error(store_url: str) -> None:
    with pytest.raises(UsageError, match=r"Unknown store migration policy 'sometimes'"):
        Store(store_url, migrate="sometimes")
