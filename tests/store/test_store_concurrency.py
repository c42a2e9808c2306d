"""Several processes at once on one SQLite store (multiprocessing, spawn)."""

from __future__ import annotations

from pathlib import Path

from store_helpers import add_versions, open_store, run_in_processes

from zserve.store import Store
from zserve.store.schema import SCHEMA_HEAD

PROCESSES = 4


def test_processes_opening_a_fresh_database_at_once_migrate_it_once(store_url: str) -> None:
    results = run_in_processes(open_store, [(store_url,)] * PROCESSES)
    assert [revision for _, revision in results] == [SCHEMA_HEAD] * PROCESSES
    # Under the lock exactly one process ran the upgrade; the others found it done.
    assert sum(migrated for migrated, _ in results) == 1
    assert Path(store_url.removeprefix("sqlite:///")).is_file()


def test_concurrent_adds_of_one_name_get_distinct_versions(store_url: str) -> None:
    Store(store_url).close()
    per_process = 5
    args = [
        (store_url, "race", [f"{p}-{i}".ljust(64, "0") for i in range(per_process)])
        for p in range(PROCESSES)
    ]
    results = [entry for entries in run_in_processes(add_versions, args) for entry in entries]
    assert all(created for _, _, created in results)
    total = PROCESSES * per_process
    assert sorted(version for _, version, _ in results) == list(range(1, total + 1))
    assert len({id for id, _, _ in results}) == total
    with Store(store_url) as store:
        stored = store.list_deployments("race")
    assert sorted(r.version for r in stored) == list(range(1, total + 1))
    # Each process saw its own versions go up.
    for entries in (results[i : i + per_process] for i in range(0, total, per_process)):
        versions = [version for _, version, _ in entries]
        assert versions == sorted(versions)


def test_concurrent_identical_deploys_share_one_version(store_url: str) -> None:
    Store(store_url).close()
    args = [(store_url, "same", ["e" * 64])] * PROCESSES
    results = [entries[0] for entries in run_in_processes(add_versions, args)]
    assert len({id for id, _, _ in results}) == 1
    assert {version for _, version, _ in results} == {1}
    assert sum(created for _, _, created in results) == 1
