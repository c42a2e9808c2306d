"""A cancelled or timed-out job gives its admission slot back, whatever kind of step it was
running: the next job runs instead of waiting for ever."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from zserve import pipeline, step
from zserve.broker import MemoryBroker
from zserve.engine.plan import compile_plan
from zserve.errors import ExecutionTimeout, JobCancelled
from zserve.jobs import JobManager
from zserve.records import StepStatus

started = threading.Event()


@step
def ticks(n: int) -> Iterator[int]:
    for i in range(n):
        started.set()
        time.sleep(0.01)
        yield i


@pipeline
def ticking(n: int) -> list[int]:
    return ticks(n)


@step
async def sleeper(s: float) -> float:
    await asyncio.sleep(s)
    return s


@pipeline
def sleeping(s: float) -> float:
    return sleeper(s)


async def next_job_runs(manager: JobManager, params: dict[str, Any]) -> None:
    _, outputs = await asyncio.wait_for(manager.run_sync(params, None), 10)
    assert outputs


@pytest.mark.anyio
async def test_timed_out_sync_generator_step_gives_its_slot_back() -> None:
    manager = JobManager(compile_plan(ticking), MemoryBroker(), max_concurrency=1)
    with pytest.raises(ExecutionTimeout):
        await manager.run_sync({"n": 1000}, 0.1)
    # the step's thread stops at its next item; then the slot is free again
    await next_job_runs(manager, {"n": 2})


@pytest.mark.anyio
async def test_cancelled_sync_generator_step_is_marked_cancelled_and_frees_its_slot() -> None:
    started.clear()
    manager = JobManager(compile_plan(ticking), MemoryBroker(), max_concurrency=1)
    task = asyncio.ensure_future(manager.run_sync({"n": 1000}, None, job_id="gen-1"))
    while not started.is_set():
        await asyncio.sleep(0.005)
    await manager.cancel("gen-1")
    with pytest.raises(JobCancelled):
        await task
    job = await manager.get("gen-1")
    assert job.status == "cancelled"
    assert [s["status"] for s in job.steps] == [StepStatus.CANCELLED]
    await next_job_runs(manager, {"n": 2})


@pytest.mark.anyio
async def test_timed_out_async_step_is_marked_cancelled_and_frees_its_slot() -> None:
    manager = JobManager(compile_plan(sleeping), MemoryBroker(), max_concurrency=1)
    with pytest.raises(ExecutionTimeout):
        await manager.run_sync({"s": 5.0}, 0.05, job_id="slow-1")
    job = await manager.get("slow-1")
    assert job.status == "failed" and job.error is not None
    assert job.error["reason"] == "timeout"
    assert [s["status"] for s in job.steps] == [StepStatus.CANCELLED]
    await next_job_runs(manager, {"s": 0.01})
