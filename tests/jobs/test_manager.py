"""The job manager in process, on the in-memory broker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from zserve import get_context, pipeline, step
from zserve.broker import MemoryBroker
from zserve.engine.plan import compile_plan
from zserve.errors import JobFinished, NotFound, Overloaded
from zserve.jobs import JobManager
from zserve.jobs.slots import Slots


@pytest.mark.anyio
async def test_slot_runs_at_most_limit_hands_over_in_order_and_survives_cancel() -> None:
    slot = Slots(1)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(name: str) -> None:
        await slot.acquire()
        try:
            order.append(name)
            assert slot.running == 1
            await gate.wait()
        finally:
            slot.release()

    first = asyncio.ensure_future(job("a"))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(job(n)) for n in "bcd"]
    await asyncio.sleep(0)
    assert slot.waiting == 3
    waiting[1].cancel()  # "c" gives up its place
    await asyncio.sleep(0)
    assert slot.waiting == 2
    gate.set()
    await asyncio.gather(first, waiting[0], waiting[2])
    assert slot.running == 0 and slot.waiting == 0
    assert order == ["a", "b", "d"]


@step
def tokens(n: int) -> Iterator[str]:
    for i in range(n):
        yield f"t{i}"
    return "joined:" + ",".join(f"t{i}" for i in range(n))  # type: ignore[misc]


@step
async def atokens(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


@step
def report(text: str, numbers: list[int]) -> dict[str, Any]:
    get_context().emit({"step": get_context().step, "got": len(numbers)})
    return {"text": text, "numbers": numbers}


@pipeline
def gens(n: int = 3) -> dict[str, Any]:
    return report(tokens(n), atokens(n))


async def events_of(manager: JobManager, job_id: str) -> list[dict[str, Any]]:
    return [e.to_dict() for e in await manager.broker.events(job_id)]


async def run_job(pipe: Any, params: dict[str, Any], **kw: Any) -> tuple[JobManager, Any]:
    """Run one async job to its end on a manager that is then shut down."""
    manager = JobManager(compile_plan(pipe), MemoryBroker(), **kw)
    await manager.start()
    job = await manager.submit(params, None)
    while not (await manager.get(job.job_id)).finished:
        await asyncio.sleep(0.005)
    record = await manager.get(job.job_id)
    await manager.shutdown(1)
    return manager, record


@pytest.mark.anyio
async def test_generator_steps_stream_chunks_and_emit_sends_progress() -> None:
    manager, record = await run_job(gens, {"n": 3})
    assert record.status == "completed"
    # a sync generator's return value is its output; an async generator's is the item list
    assert record.outputs == {"output": {"text": "joined:t0,t1,t2", "numbers": [0, 1, 2]}}
    events = await events_of(manager, record.job_id)
    chunks = [(e["step"], e["chunk"]) for e in events if e["event"] == "step.chunk"]
    assert [c for s, c in chunks if s == "tokens"] == ["t0", "t1", "t2"]
    assert [c for s, c in chunks if s == "atokens"] == [0, 1, 2]
    (progress,) = [e for e in events if e["event"] == "step.progress"]
    assert progress["step"] == "report" and progress["progress"] == {"step": "report", "got": 3}


@pytest.mark.anyio
async def test_sync_jobs_are_recorded_in_memory_only() -> None:
    broker = MemoryBroker()
    manager = JobManager(compile_plan(gens), broker)
    await manager.start()
    record, outputs = await manager.run_sync({"n": 2}, None)
    assert outputs["output"]["numbers"] == [0, 1]
    assert (await manager.get(record.job_id)).status == "completed"
    assert [s["status"] for s in record.steps] == ["completed"] * 3
    assert await broker.list_jobs() == []  # never reached the broker
    with pytest.raises(NotFound):
        await manager.get("nope")
    with pytest.raises(JobFinished):
        await manager.cancel(record.job_id)
    await manager.shutdown(1)


@pytest.mark.anyio
async def test_cancel_inside_a_sync_generator_stops_between_items() -> None:
    produced: list[int] = []
    release = threading.Event()

    @step
    def slow_items(n: int) -> Iterator[int]:
        for i in range(n):
            produced.append(i)
            if i == 2:
                release.set()
            time.sleep(0.02)
            yield i

    @pipeline
    def p(n: int = 1000) -> list[int]:
        return slow_items(n)

    manager = JobManager(compile_plan(p), MemoryBroker())
    await manager.start()
    job = await manager.submit({"n": 1000}, None)
    await asyncio.to_thread(release.wait, 10)
    await manager.cancel(job.job_id)
    record = await manager.get(job.job_id)
    await asyncio.sleep(0.2)  # the thread notices the stop flag at the next item
    count = len(produced)
    await asyncio.sleep(0.2)
    await manager.shutdown(1)
    assert record.status == "cancelled"
    assert count == len(produced) and count < 50  # nothing more was produced


@pytest.mark.anyio
async def test_overloaded_when_running_and_queue_are_full() -> None:
    @step
    async def hold(x: int) -> int:
        await asyncio.sleep(10)
        return x

    @pipeline
    def p(x: int = 0) -> int:
        return hold(x)

    manager = JobManager(compile_plan(p), MemoryBroker(), max_concurrency=1, max_queue=1)
    await manager.start()
    await manager.submit({"x": 0}, None)
    await asyncio.sleep(0.01)
    await manager.submit({"x": 0}, None)
    with pytest.raises(Overloaded) as info:
        await manager.submit({"x": 0}, None)
    assert info.value.http_status == 429 and info.value.retry_after == 1  # type: ignore[attr-defined]
    with pytest.raises(Overloaded):
        await manager.run_sync({"x": 0}, None)
    await manager.shutdown(0.01)
    # shutting down ended the running and the queued job with reason "shutdown"
    jobs = await manager.broker.list_jobs()
    assert sorted(j.error["reason"] for j in jobs if j.error) == ["shutdown", "shutdown"]
