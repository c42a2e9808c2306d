"""A job running while its broker (Redis) is cut off: its events wait in the worker, in order,
up to ``MAX_PENDING_EVENTS``; within that bound nothing is lost once Redis is back, and beyond it
the job fails with a reason that says why. Redis is real; the partition is a TCP proxy cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from tests.broker.conftest import REDIS_MARKS, redis_namespace, redis_url
from tests.broker.netcut import NetCut
from zserve import pipeline, step
from zserve.broker import open_broker
from zserve.broker.base import IdempotencyKey
from zserve.engine.plan import compile_plan
from zserve.errors import BrokerUnavailable
from zserve.jobs import JobManager
from zserve.jobs.once import submit_once
from zserve.jobs.publisher import MAX_PENDING_EVENTS
from zserve.records import JobRecord

pytestmark = [pytest.mark.anyio, *REDIS_MARKS]

GATE: dict[str, asyncio.Event] = {}


@step
async def burst(n: int) -> AsyncIterator[int]:
    await GATE["go"].wait()
    for i in range(n):
        yield i
        if i % 100 == 0:
            await asyncio.sleep(0)


@pipeline
def bursty(n: int = 10) -> dict[str, object]:
    return {"out": burst(n)}


@asynccontextmanager
async def managed() -> AsyncIterator[tuple[JobManager, NetCut]]:
    """A job manager whose Redis (with a key prefix of its own) is behind a proxy to cut."""
    base = redis_url()
    assert base is not None
    with redis_namespace(base) as url:
        cut = NetCut(url)
        await cut.start()
        manager = JobManager(compile_plan(bursty), open_broker(cut.url))
        await manager.start()
        try:
            yield manager, cut
        finally:
            await manager.shutdown(1.0)
            await cut.close()


async def run_through_outage(n: int) -> tuple[dict[str, object], list[int]]:
    """Start a job of ``n`` chunks, cut Redis off, let it emit them all, mend: its record and
    the chunk indexes its stream holds."""
    GATE["go"] = asyncio.Event()
    async with managed() as (manager, cut):
        record = await manager.submit({"n": n}, None)
        while (await manager.broker.get(record.job_id)).status != "running":  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
        await cut.cut()
        GATE["go"].set()
        await asyncio.sleep(1.0)  # the chunks are emitted meanwhile; none can be written
        await cut.mend()
        deadline = asyncio.get_running_loop().time() + 60
        while not (done := await manager.broker.get(record.job_id)).finished:  # type: ignore[union-attr]
            assert asyncio.get_running_loop().time() < deadline, "the job never ended"
            await asyncio.sleep(0.05)
        events = await manager.broker.events(record.job_id)
    chunks = [e.data["chunk"] for e in events if e.type == "step.chunk"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].terminal
    return {"status": done.status, "error": done.error}, chunks


async def test_events_wait_for_redis_and_none_is_lost_within_the_bound() -> None:
    outcome, chunks = await run_through_outage(2000)
    assert outcome == {"status": "completed", "error": None}
    assert chunks == list(range(2000))


@pytest.mark.slow
async def test_beyond_the_bound_the_job_fails_with_a_reason_that_says_why() -> None:
    outcome, chunks = await run_through_outage(MAX_PENDING_EVENTS + 5000)
    assert outcome["status"] == "failed"
    assert outcome["error"]["reason"] == "broker_unavailable"  # type: ignore[index]
    assert "Redis" in outcome["error"]["message"]  # type: ignore[index]
    # what was kept came through in order, with no gap, up to the bound (give or take the
    # batch that was on its way when Redis went)
    assert chunks == list(range(len(chunks)))
    assert MAX_PENDING_EVENTS - 100 < len(chunks) < MAX_PENDING_EVENTS + 100


@pytest.mark.slow
async def test_a_submit_whose_answer_was_lost_runs_with_a_key_and_fails_without() -> None:
    """Redis creates the job but its answer is lost: the submit is answered 503. Once Redis
    answers again, the job sent with an idempotency key runs (a retry with that key is answered
    with it: the broker holds the key); the one sent without ends failed with a reason that says
    so, as its client was told to retry and may have submitted another. Neither stays queued."""
    GATE["go"] = asyncio.Event()
    GATE["go"].set()
    key = IdempotencyKey("retry-me", "fp")
    async with managed() as (manager, cut):
        for idempotency in (key, None):
            await manager.broker.get("none")  # a connection that is open before the loss
            cut.swallow()
            with pytest.raises(BrokerUnavailable):
                await manager.submit({"n": 3}, None, idempotency=idempotency)
            await cut.mend()
        jobs = await wait_until(lambda: finished_jobs(manager, 2))
        # the client's retry with its key gets the job that ran
        again, replayed = await submit_once(manager, key, {"n": 3}, None)
    outcomes = sorted((j.status, (j.error or {}).get("reason")) for j in jobs)
    assert outcomes == [("completed", None), ("failed", "broker_unavailable")]
    assert replayed and again.status == "completed"
    failed = next(j for j in jobs if j.status == "failed")
    assert failed.error is not None and "answered 503" in failed.error["message"]


async def finished_jobs(manager: JobManager, count: int) -> list[JobRecord]:
    jobs = await manager.broker.list_jobs()
    return jobs if len(jobs) == count and all(j.finished for j in jobs) else []


async def wait_until(probe: Callable[[], Awaitable[list[JobRecord]]]) -> list[JobRecord]:
    deadline = asyncio.get_running_loop().time() + 60
    while not (found := await probe()):
        assert asyncio.get_running_loop().time() < deadline, "the jobs never ended"
        await asyncio.sleep(0.1)
    return found
