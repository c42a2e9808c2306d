"""The queueing policy of admission slots: FIFO within sync requests and within background jobs,
and when both wait, slots alternate between them, so neither kind starves the other."""

from __future__ import annotations

import asyncio

import pytest

from zserve.jobs.slots import Slots


@pytest.mark.anyio
async def test_sync_requests_are_not_starved_by_background_jobs() -> None:
    slots = Slots(1)
    order: list[str] = []
    holder_done = asyncio.Event()

    async def holder() -> None:
        await slots.acquire()
        await holder_done.wait()
        slots.release()

    async def job(name: str, sync: bool) -> None:
        await slots.acquire(sync=sync)
        order.append(name)
        await asyncio.sleep(0)
        slots.release()

    first = asyncio.ensure_future(holder())
    await asyncio.sleep(0)
    tasks = [asyncio.ensure_future(job(f"bg{i}", False)) for i in range(100)]
    await asyncio.sleep(0)
    tasks += [asyncio.ensure_future(job(f"sync{i}", True)) for i in range(3)]
    await asyncio.sleep(0)
    assert slots.waiting == 103
    holder_done.set()
    await asyncio.gather(first, *tasks)
    # behind 100 queued background jobs, the sync requests get every other slot
    assert order[:6] == ["sync0", "bg0", "sync1", "bg1", "sync2", "bg2"]
    assert order[6:] == [f"bg{i}" for i in range(3, 100)]
    assert slots.running == 0 and slots.waiting == 0


@pytest.mark.anyio
async def test_a_cancelled_waiter_leaves_its_place() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiting = asyncio.ensure_future(slots.acquire(sync=True))
    other = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.sleep(0)
    assert slots.waiting == 1
    slots.release()
    await other
    assert slots.running == 1
    slots.release()
    assert slots.running == 0 and slots.free
