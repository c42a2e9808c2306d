"""Worker processes sharing one broker: a SQLite file, or Redis."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import time
from pathlib import Path
from typing import Any

import pytest

from tests.broker import procs
from tests.broker.conftest import REDIS_MARKS, redis_namespace, redis_url
from zserve.broker import open_broker
from zserve.events import STEP_CHUNK, TERMINAL, Event
from zserve.records import JobRecord

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=REDIS_MARKS)])
async def test_many_processes_publish_and_race_to_finish(tmp_path: Path, kind: str) -> None:
    """Worker processes on one broker (a SQLite file, or Redis as hosts would share it): their
    own jobs' chunks, and a race to end shared jobs. (The processes are started and waited for
    by blocking calls: nothing else is on the loop.)"""
    with contextlib.ExitStack() as stack:
        if kind == "redis":
            url = redis_url()
            assert url is not None
            target = stack.enter_context(redis_namespace(url))
        else:
            target = f"sqlite:///{tmp_path / 'broker.db'}"
        await _race(target)


async def _race(path: str) -> None:
    n_procs = 4
    plan = {"own_jobs": 3, "tasks": 3, "chunks": 100, "shared_jobs": 50}
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n_procs), ctx.Queue()
    workers = [
        ctx.Process(target=procs.hammer, args=(path, i, plan, barrier, results))
        for i in range(n_procs)
    ]
    began = time.perf_counter()
    reports: list[dict[str, Any]] = []
    try:
        for w in workers:
            w.start()
        for _ in workers:
            reports.append(results.get(timeout=120))
    except queue.Empty:
        pytest.fail(f"only {len(reports)} of {n_procs} worker processes reported")
    finally:
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
                w.join()
    total = time.perf_counter() - began
    errors = [r["error"] for r in reports if "error" in r]
    assert not errors, "\n".join(errors)  # "database is locked" would show here
    assert [w.exitcode for w in workers] == [0] * n_procs

    broker = open_broker(path)
    await broker.start()
    try:
        ids = [procs.shared_id(k) for k in range(plan["shared_jobs"])] + [
            procs.own_id(i, k) for i in range(n_procs) for k in range(plan["own_jobs"])
        ]
        stored: dict[str, tuple[JobRecord | None, list[Event]]] = {
            j: (await broker.get(j), await broker.events(j)) for j in ids
        }
    finally:
        await broker.close()
    for job_id, (record, events) in stored.items():
        assert record is not None, job_id
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), job_id
        terminals = [e for e in events if e.terminal]
        assert len(terminals) == 1 and terminals[0] is events[-1], job_id
        assert record.status == TERMINAL[terminals[0].type] and record.finished_at, job_id

    by_proc = {r["index"]: r for r in reports}
    chunks_per_job = plan["tasks"] * plan["chunks"]
    for index, report in by_proc.items():
        for own in report["own"]:
            record, events = stored[own["job_id"]]
            assert own["terminal"] == events[-1].seq == chunks_per_job + 3
            assert own["seqs"] == list(range(3, 3 + chunks_per_job))
            for task in range(plan["tasks"]):
                mine = [e.data["i"] for e in events if e.data.get("task") == task]
                assert mine == list(range(plan["chunks"]))
            assert record is not None and record.worker == f"w{index}"

    for k in range(plan["shared_jobs"]):
        job_id = procs.shared_id(k)
        record, events = stored[job_id]
        tries = [s for r in reports for s in r["shared"] if s["job_id"] == job_id]
        won = [t["terminal"] for t in tries if t["terminal"] is not None]
        assert won == [events[-1].seq], job_id  # exactly one process ended it
        winner = events[-1].data["proc"]
        assert record is not None
        assert record.status == ("completed" if winner == procs.SHARED_OWNER else "failed")
        # Every chunk a process was told it published is there, and none came after the end.
        published = sorted(s for t in tries for s in t["seqs"])
        assert published == [e.seq for e in events if e.type == STEP_CHUNK]
    elapsed = sorted(round(r["elapsed"], 2) for r in reports)
    print(f"\n{n_procs} processes: {total:.2f}s in all (spawn included), work {elapsed}s each")
