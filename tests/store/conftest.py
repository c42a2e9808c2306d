"""Fixtures for the store tests: a real SQLite file under ``tmp_path``, and a fresh PostgreSQL
database per test when ``ZSERVE_TEST_POSTGRES_URL`` names a server (``scripts/test-services``).

Every test that uses ``store_url`` or ``store`` runs once per backend (``[sqlite]``,
``[postgresql]``), except those in ``SQLITE_ONLY``: they inspect the SQLite file itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers module must be importable by name in spawned child processes, which inherit
# sys.path; pytest's default import mode already puts this directory there, other modes may not.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from store_backends import (  # noqa: E402
    BACKENDS,
    POSTGRESQL,
    SKIP_REASON,
    SQLITE,
    postgres_admin_url,
    postgres_database,
    sqlite_url,
)

from zserve.store import Store  # noqa: E402

#: Tests written against the SQLite file (sqlite3, its path, PRAGMAs, the lock file beside it),
#: by module. Their backend-neutral counterparts are in test_store_schema.py.
SQLITE_ONLY = {
    "test_store_migrations": {
        "test_fresh_database_is_created_and_migrated_to_head",
        "test_connections_use_wal_normal_sync_and_a_busy_timeout",
        "test_up_to_date_database_is_not_migrated_again",
        "test_database_behind_head_is_upgraded",
        "test_database_from_a_newer_zserve_is_refused",
    },
    "test_store_concurrency": {
        "test_processes_opening_a_fresh_database_at_once_migrate_it_once",
    },
    "test_store_health": {
        "test_a_deleted_database_file_is_unavailable",
        "test_a_replaced_database_file_is_unavailable",
        "test_a_read_only_database_file_is_unavailable",
        "test_a_read_only_directory_is_unavailable",
        "test_a_locked_database_is_waited_for_not_failed",
    },
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgresql: the PostgreSQL variant of a store test (needs a server)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rpartition(".")[2]
    sqlite_only = SQLITE_ONLY.get(module, set())
    missing = sorted(name for name in sqlite_only if not hasattr(metafunc.module, name))
    assert not missing, f"conftest SQLITE_ONLY names tests {module} no longer has: {missing}"
    if metafunc.function.__name__ in sqlite_only:
        return  # the fixture's default: SQLite, and no [sqlite] in the test id
    # Skipped by a mark rather than in the fixture, so that -ra sums the skips up per file.
    postgres_marks = [pytest.mark.postgresql]
    if postgres_admin_url() is None:
        postgres_marks.append(pytest.mark.skip(reason=SKIP_REASON))
    params = [
        pytest.param(backend, marks=postgres_marks) if backend == POSTGRESQL else backend
        for backend in BACKENDS
    ]
    metafunc.parametrize("store_backend", params, indirect=True)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """The database kind this test runs on."""
    backend: str = getattr(request, "param", SQLITE)
    if backend == POSTGRESQL and postgres_admin_url() is None:
        pytest.skip(SKIP_REASON)
    return backend


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of its own: a SQLite file that does not exist yet, or a new
    PostgreSQL database (dropped after the test)."""
    if store_backend == SQLITE:
        yield sqlite_url(tmp_path)
        return
    admin_url = postgres_admin_url()
    assert admin_url is not None
    with postgres_database(admin_url) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as opened:
        yield opened


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database of this test's own (skipped without a server)."""
    admin_url = postgres_admin_url()
    if admin_url is None:
        pytest.skip(SKIP_REASON)
    with postgres_database(admin_url) as url:
        yield url
