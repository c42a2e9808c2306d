"""The SQLite broker when its file cannot be written (SQLite's own "database or disk is full",
made real with ``PRAGMA max_page_count``), when the file has another layout, and when a lease
runs out while its worker's process still runs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.broker.conftest import event, job
from zserve.broker.sqlite import SQLiteBroker
from zserve.broker.sqlite_schema import LAYOUT, for_want_of_storage
from zserve.errors import BrokerUnavailable
from zserve.events import JOB_COMPLETED, JOB_QUEUED, JOB_STARTED

pytestmark = pytest.mark.anyio


def _sqlite_error(sql: str, db: sqlite3.Connection) -> sqlite3.Error:
    try:
        db.execute(sql)
    except sqlite3.Error as exc:
        return exc
    raise AssertionError(f"{sql} did not fail")


def test_only_errors_of_where_the_file_lives_count_as_storage(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    db.execute("INSERT INTO t VALUES (1, 'a')")
    db.execute("PRAGMA max_page_count = 2")
    full = _sqlite_error(f"INSERT INTO t VALUES (2, '{'x' * 100_000}')", db)
    assert "full" in str(full) and for_want_of_storage(full)
    assert not for_want_of_storage(_sqlite_error("INSERT INTO t VALUES (1, 'b')", db))
    assert not for_want_of_storage(_sqlite_error("SELECT * FROM nowhere", db))
    assert not for_want_of_storage(ValueError("not sqlite"))


async def _full(broker: SQLiteBroker, pages: int) -> None:
    await broker._read(lambda: broker._conn.execute(f"PRAGMA max_page_count = {pages}"))


async def test_a_full_file_refuses_new_jobs_keeps_its_reason_and_recovers(tmp_path: Path) -> None:
    broker = SQLiteBroker(str(tmp_path / "b.db"))
    await broker.start()
    try:
        await broker.create(job("j1", worker="w"), event(JOB_QUEUED, "j1"))
        pages = await broker._read(lambda: broker._conn.execute("PRAGMA page_count").fetchone())
        await _full(broker, pages[0])
        big = event(JOB_STARTED, "j1", blob="x" * 200_000)
        with pytest.raises(BrokerUnavailable) as failed:
            await broker.publish("j1", [big])
        assert not failed.value.lasting and "full" in str(failed.value)
        assert broker.problem is not None and "b.db" in broker.problem
        with pytest.raises(BrokerUnavailable):  # refused without trying
            await broker.create(job("j2", worker="w"), event(JOB_QUEUED, "j2"))
        assert await broker.prune(time.time(), 10) == 0  # a commit that wrote nothing...
        assert broker.problem is not None  # ...does not say the file can be written again
        await _full(broker, 1_000_000)
        assert await broker.publish("j1", [big]) != []
        assert broker.problem is None
        done = await broker.finish("j1", event(JOB_COMPLETED, "j1"), {"finished_at": 1.0})
        assert done is not None and [e.seq for e in await broker.events("j1")] == [1, 2, 3]
    finally:
        await broker.close()


async def test_a_file_of_another_layout_is_refused_and_an_unversioned_one_made_anew(
    tmp_path: Path,
) -> None:
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {LAYOUT + 1}")
    broker = SQLiteBroker(str(newer))
    await broker.start()
    try:
        assert broker.problem is not None and "another zserve version" in broker.problem
        with pytest.raises(BrokerUnavailable) as refused:
            await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        assert refused.value.lasting
    finally:
        await broker.close()

    older = tmp_path / "older.db"
    with sqlite3.connect(older) as db:  # the leases table before it had `born`
        db.execute("CREATE TABLE leases (worker TEXT PRIMARY KEY, expires_at REAL NOT NULL)")
    broker = SQLiteBroker(str(older))
    await broker.start()
    try:
        await broker.heartbeat("w", 5)
        assert broker.problem is None
    finally:
        await broker.close()
    with sqlite3.connect(older) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (LAYOUT,)


async def test_a_lapsed_lease_of_a_live_process_is_not_expired(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    broker = SQLiteBroker(str(tmp_path / "b.db"))
    await broker.start()
    try:
        live, dead = f"{os.getpid()}-live", f"{dead_pid}-dead"
        for job_id, worker in (("mine", live), ("theirs", dead)):
            await broker.create(job(job_id, worker=worker), event(JOB_QUEUED, job_id))
            await broker.heartbeat(worker, 1)
        later = time.time() + 60  # both leases ran out
        assert [j.job_id for j in await broker.expired(later)] == ["theirs"]
    finally:
        await broker.close()
