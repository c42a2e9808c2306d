"""``zserve db upgrade|current``, through Typer's CliRunner, on real SQLite files and on a real
PostgreSQL database (``ZSERVE_TEST_POSTGRES_URL``, from ``scripts/test-services``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from tests.store.store_backends import POSTGRES_URL_ENV, postgres_admin_url, postgres_database
from zserve.cli import app
from zserve.settings import hide_password
from zserve.store import Store
from zserve.store.schema import SCHEMA_HEAD, alembic_config

runner = CliRunner()
#: Read before ``zhome`` clears every ZSERVE_ variable.
POSTGRES_ADMIN = postgres_admin_url()


def zserve(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=[
                pytest.mark.postgresql,
                pytest.mark.skipif(
                    not POSTGRES_ADMIN, reason=f"{POSTGRES_URL_ENV} is not set: scripts/test"
                ),
            ],
        ),
    ]
)
def empty_store(request: pytest.FixtureRequest, zhome: Path) -> Iterator[str]:
    """The URL of a store that has no schema yet: a SQLite file not made yet, or an empty
    PostgreSQL database (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{zhome}/zserve.db"
        return
    assert POSTGRES_ADMIN is not None
    with postgres_database(POSTGRES_ADMIN) as url:
        yield url


def revision_in(url: str) -> list[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def test_upgrade_makes_the_schema_then_finds_it_at_head(empty_store: str) -> None:
    shown = hide_password(empty_store)
    first = zserve("db", "upgrade", "--store", empty_store)
    assert first.exit_code == 0, first.output
    assert first.stdout == f"Store {shown}: upgraded from revision none to {SCHEMA_HEAD} (head)\n"
    assert revision_in(empty_store) == [SCHEMA_HEAD]
    with Store(empty_store) as store:  # a server opening it now has nothing to migrate
        assert store.migrated is False
        assert store.list_deployments() == []

    again = zserve("db", "upgrade", "--store", empty_store, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {
        "json_version": 1, "store": shown, "before": SCHEMA_HEAD, "after": SCHEMA_HEAD,
        "head": SCHEMA_HEAD, "upgraded": False,
    }  # fmt: skip
    current = zserve("db", "current", "--store", empty_store)
    assert current.exit_code == 0, current.output
    assert current.stdout == f"Store {shown}: revision {SCHEMA_HEAD} (head)\n"


def test_upgrade_brings_a_store_behind_head_to_head(empty_store: str, zhome: Path) -> None:
    zhome.mkdir()
    command.upgrade(alembic_config(empty_store), "0002")  # what an older zserve left
    assert revision_in(empty_store) == ["0002"]
    current = zserve("db", "current", "--store", empty_store, "--json")
    assert current.exit_code == 0, current.output
    assert json.loads(current.stdout)["revision"] == "0002"
    assert json.loads(current.stdout)["at_head"] is False
    human = zserve("db", "current", "--store", empty_store).stdout
    assert f"revision 0002 (behind head {SCHEMA_HEAD}: run `zserve db upgrade`)" in human

    result = zserve("db", "upgrade", "--store", empty_store, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["before"], doc["after"], doc["upgraded"]) == ("0002", SCHEMA_HEAD, True)
    assert revision_in(empty_store) == [SCHEMA_HEAD]


def test_a_store_of_a_newer_zserve_is_refused_and_left_as_it_is(empty_store: str) -> None:
    assert zserve("db", "upgrade", "--store", empty_store).exit_code == 0
    engine = create_engine(empty_store, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = zserve("db", "upgrade", "--store", empty_store)
    assert result.exit_code == 2
    assert "is at schema revision '9999', which this zserve does not know" in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert revision_in(empty_store) == ["9999"]
    current = zserve("db", "current", "--store", empty_store)
    assert current.exit_code == 0
    assert "revision 9999 (unknown to this zserve" in current.stdout


def test_the_store_defaults_to_zserve_store_url_and_a_path_is_a_sqlite_file(
    zhome: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = zserve("db", "upgrade")  # ZSERVE_HOME's embedded store
    assert result.exit_code == 0, result.output
    assert (zhome / "zserve.db").is_file()
    assert f"sqlite:///{zhome}/zserve.db" in result.stdout
    elsewhere = tmp_path / "other.db"
    monkeypatch.setenv("ZSERVE_STORE_URL", f"sqlite:///{elsewhere}")
    assert zserve("db", "upgrade").exit_code == 0
    assert elsewhere.is_file()
    monkeypatch.chdir(tmp_path)
    by_path = zserve("db", "current", "--store", "other.db", "--json")
    assert by_path.exit_code == 0, by_path.output
    assert json.loads(by_path.stdout)["store"] == f"sqlite:///{elsewhere}"
    assert json.loads(by_path.stdout)["revision"] == SCHEMA_HEAD


def test_current_makes_nothing(zhome: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none" / "zserve.db"
    result = zserve("db", "current", "--store", str(missing))
    assert result.exit_code == 3
    assert result.stderr == (
        f"Error: There is no store at sqlite:///{missing}: {missing} does not exist "
        "(`zserve db upgrade` makes it)\n"
    )
    assert not missing.parent.exists()


def test_an_empty_sqlite_file_is_a_store_with_no_revision(zhome: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    with closing(sqlite3.connect(empty)):
        pass
    assert zserve("db", "current", "--store", str(empty)).stdout.endswith(
        f"revision none (behind head {SCHEMA_HEAD}: run `zserve db upgrade`)\n"
    )
    assert "from revision none to" in zserve("db", "upgrade", "--store", str(empty)).stdout


@pytest.mark.parametrize("verb", ["upgrade", "current"])
@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("foo://x", 2, "The store URL 'foo://x' is not usable"),
        ("postgresql://u:pw@127.0.0.1:9/db", 3, "Cannot read the store at postgresql://u:***@"),
    ],
)
def test_an_unusable_or_unreachable_store_is_one_error_line(
    zhome: Path, verb: str, url: str, code: int, message: str
) -> None:
    result = zserve("db", verb, "--store", url)
    assert result.exit_code == code
    assert result.stderr.startswith(f"Error: {message}")
    assert result.stderr.count("\n") == 1
    assert "pw" not in result.stderr
