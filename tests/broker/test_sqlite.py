"""What only the SQLite broker promises: one file shared by several brokers and processes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.broker.conftest import event, job
from zserve.broker import open_broker
from zserve.broker.sqlite import SQLiteBroker
from zserve.events import (
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_STARTED,
    STEP_CHUNK,
    TERMINAL,
)

pytestmark = pytest.mark.anyio


async def test_open_broker_url_makes_a_sqlite_broker_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    broker = open_broker(f"sqlite:///{path}")
    assert isinstance(broker, SQLiteBroker) and broker.kind == "sqlite"
    await broker.start()
    try:
        first = await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
    finally:
        await broker.close()
    assert first.seq == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"jobs", "events", "cancels", "leases"} <= tables
        plan = " ".join(
            str(r) for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT record FROM jobs WHERE status = ?"
                " ORDER BY created_at DESC LIMIT 5", ("running",)
            )
        )  # fmt: skip
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan  # no sort, no scan


async def test_brokers_opening_a_new_file_at_once(tmp_path: Path) -> None:
    """Several brokers creating the same file: the switch to WAL must not say "locked"."""
    for attempt in range(40):
        brokers = [SQLiteBroker(str(tmp_path / f"{attempt}.db")) for _ in range(8)]
        try:
            await asyncio.gather(*(b.start() for b in brokers))
            await brokers[3].create(job("j1"), event(JOB_QUEUED, "j1"))
            assert [len(await b.events("j1")) for b in brokers] == [1] * 8
        finally:
            await asyncio.gather(*(b.close() for b in brokers), return_exceptions=True)


async def test_data_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "broker.db")
    writer = SQLiteBroker(path)
    await writer.start()
    await writer.create(job("j1", mode="stream"), event(JOB_QUEUED, "j1"))
    await writer.publish("j1", [event(STEP_CHUNK, "j1", "s", chunk="a")], {"worker": "w1"})
    await writer.close()

    reader = SQLiteBroker(path)
    await reader.start()
    try:
        record, events = await reader.get("j1"), await reader.events("j1")
    finally:
        await reader.close()
    assert record is not None and (record.mode, record.worker) == ("stream", "w1")
    assert [(e.seq, e.type, e.data) for e in events] == [
        (1, JOB_QUEUED, {}),
        (2, STEP_CHUNK, {"chunk": "a"}),
    ]


async def test_two_brokers_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = str(tmp_path / "broker.db")
    a, b = SQLiteBroker(path), SQLiteBroker(path)
    await asyncio.gather(a.start(), b.start())
    try:
        await a.create(job("j1"), event(JOB_QUEUED, "j1"))
        seen = await b.get("j1")
        assert seen is not None and seen.status == "queued"
        # b publishes, a's waiter (which only polls the file) wakes up.
        waiter = asyncio.create_task(a.wait("j1", 1, timeout=30))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        placed = await b.publish(
            "j1", [event(JOB_STARTED, "j1")], {"status": "running", "worker": "wb"}
        )
        assert await asyncio.wait_for(waiter, 10) == placed
        assert (await a.events("j1"))[1:] == placed
        # A cancel asked through one is seen through the other.
        await a.request_cancel("j1")
        assert await b.cancel_requested(["j1"]) == {"j1"}
        # Both try to end it at once: one wins, the loser writes nothing.
        lost = {"reason": "worker_lost", "message": "lease expired"}
        results = await asyncio.gather(
            b.finish("j1", event(JOB_COMPLETED, "j1"), {"finished_at": 1.0}),
            a.finish("j1", event(JOB_FAILED, "j1"), {"finished_at": 2.0, "error": lost}),
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1 and winners[0].seq == 3
        for broker in (a, b):
            events = await broker.events("j1")
            assert [e.seq for e in events] == [1, 2, 3] and events[-1] == winners[0]
            record = await broker.get("j1")
            assert record is not None and record.status == TERMINAL[winners[0].type]
            assert await broker.cancel_requested(["j1"]) == set()
        # Leases are shared too.
        await b.heartbeat("wb", 60)
        assert await a.expired(time.time()) == []
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_concurrent_publishes_keep_order_and_contiguous_seqs(tmp_path: Path) -> None:
    """Many tasks of one worker publishing at once (batched into shared transactions)."""
    broker = SQLiteBroker(str(tmp_path / "broker.db"))
    await broker.start()
    try:
        await broker.create(job("j1", status="running", worker="w1"), event(JOB_QUEUED, "j1"))

        async def emit(task: int) -> list[int]:
            got = []
            for i in range(25):
                placed = await broker.publish("j1", [event(STEP_CHUNK, "j1", "s", task=task, i=i)])
                got += [e.seq for e in placed]
            return got

        per_task = await asyncio.gather(*(emit(t) for t in range(20)))
        assert all(got == sorted(got) for got in per_task)
        events = await broker.events("j1")
    finally:
        await broker.close()
    assert [e.seq for e in events] == list(range(1, 2 + 20 * 25))
    for task in range(20):
        assert [e.data["i"] for e in events if e.data.get("task") == task] == list(range(25))


async def test_a_failing_write_does_not_spoil_the_writes_batched_with_it(tmp_path: Path) -> None:
    path = tmp_path / "broker.db"
    broker = SQLiteBroker(str(path))
    await broker.start()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await broker.create(job("j0"), event(JOB_QUEUED, "j0"))
        await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        # Another connection holds the write lock: the broker's next transaction waits for it
        # (within its busy timeout), and the writes queued meanwhile share the one after it.
        holder.execute("BEGIN IMMEDIATE")
        in_flight = asyncio.ensure_future(broker.publish("j0", [event(STEP_CHUNK, "j0", "s", i=0)]))
        await asyncio.sleep(0.05)
        writes = asyncio.gather(
            broker.publish("j1", [event(STEP_CHUNK, "j1", "s", i=0)]),
            broker.create(job("j1"), event(JOB_QUEUED, "j1")),  # duplicate id: fails
            broker.publish("j1", [event(STEP_CHUNK, "j1", "s", i=1)]),
            return_exceptions=True,
        )
        await asyncio.sleep(0.05)
        assert not in_flight.done() and not writes.done()  # all of them wait for the lock
        holder.execute("ROLLBACK")
        assert [e.seq for e in await in_flight] == [2]
        results: list[Any] = await writes
        events = await broker.events("j1")
    finally:
        holder.close()
        await broker.close()
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert [[e.seq for e in r] for r in (results[0], results[2])] == [[2], [3]]
    assert [e.seq for e in events] == [1, 2, 3]


async def test_publish_refuses_what_only_finish_may_do(tmp_path: Path) -> None:
    broker = SQLiteBroker(str(tmp_path / "broker.db"))
    await broker.start()
    try:
        await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        with pytest.raises(ValueError, match="finish"):
            await broker.publish("j1", [event(JOB_COMPLETED, "j1")])
        with pytest.raises(ValueError, match="finish"):
            await broker.publish("j1", [], {"status": "completed"})
        with pytest.raises(ValueError, match="bogus"):
            await broker.publish("j1", [], {"bogus": 1})
        with pytest.raises(ValueError, match="terminal"):
            await broker.finish("j1", event(JOB_STARTED, "j1"), {})
        record = await broker.get("j1")
        assert record is not None and record.status == "queued"
        assert len(await broker.events("j1")) == 1
    finally:
        await broker.close()
