"""Recorded runs written from several processes and threads at once: nothing is lost, and SQLite
never answers "database is locked" (writes begin with BEGIN IMMEDIATE and wait their turn)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from sqlalchemy import text
from store_helpers import (
    T0,
    bytes_artifact,
    run_in_processes,
    run_record,
    switch_to_wal,
    write_runs,
)

from zserve.store import Store

WRITERS = 2
SECONDS = 3.0
BIG = b"shared by every run " * 1000  # 20 KB: one file for all


def test_processes_writing_runs_at_once_lose_nothing(store_url: str, tmp_path: Path) -> None:
    # Both processes open the store themselves: a fresh database, migrated by one of them.
    files = str(tmp_path / "files")
    args = [(store_url, files, SECONDS, 8, BIG)] * WRITERS
    written = [run_id for ids in run_in_processes(write_runs, args) for run_id in ids]
    assert len(written) >= WRITERS * 8
    with Store(store_url, artifact_dir=files) as store:
        with store.engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
            steps = conn.execute(text("SELECT count(*) FROM steps")).scalar_one()
            files = conn.execute(text("SELECT count(DISTINCT path) FROM artifacts")).scalar_one()
        assert (count, steps, files) == (len(written), 3 * len(written), 1)
        listed: list[str] = []
        cursor = None
        while True:
            page, cursor = store.list_runs(limit=500, cursor=cursor)
            listed += [r.run_id for r in page]
            if cursor is None:
                break
        assert sorted(listed) == sorted(written)
        last = store.get_run(written[-1])
        artifact = last.steps[2].outputs["output"]  # type: ignore[index]
        assert store.read_artifact(last.run_id, artifact.artifact_id)[1] == BIG


def test_one_store_is_shared_by_a_writer_thread_and_reader_threads(
    store_url: str, tmp_path: Path
) -> None:
    with Store(store_url, artifact_dir=str(tmp_path / "files")) as store:
        _share(store)


def _share(store: Store) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        try:
            for batch in range(40):
                records = [run_record(T0 + batch * 10 + i) for i in range(5)]
                records[0].steps[1].outputs = {"output": bytes_artifact(bytes([batch]) * 20_000)}
                store.add_runs(records)
                written.extend(r.run_id for r in records)
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                page, _ = store.list_runs(limit=20)
                for record in page[:3]:
                    back = store.get_run(record.run_id)
                    assert len(back.steps) == 3
                    for step in back.steps:
                        for artifact in (step.outputs or {}).values():
                            store.read_artifact(back.run_id, artifact.artifact_id)
                if page:
                    store.resolve_run(page[0].run_id[:8])
                store.check()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(written) == 200
    assert sorted(r.run_id for r in store.list_runs(limit=500)[0]) == sorted(written)


# -- switching a fresh file to WAL ---------------------------------------------------------------


def test_processes_switching_a_fresh_file_to_wal_at_once_all_succeed(tmp_path: Path) -> None:
    # Without the retry in configure_sqlite, about one connection in eight failed here with
    # "database is locked": SQLite does not wait for the lock that switch needs.
    processes, rounds = 4, 25
    barrier = multiprocessing.get_context("spawn").Barrier(processes)
    args = [(str(tmp_path), rounds, barrier)] * processes
    assert run_in_processes(switch_to_wal, args) == [rounds] * processes
