"""The Redis broker's blocking reads: one tailer per broker serves every ``wait`` over one
connection, whatever the number of waiters; a waiter that comes while it is blocked is served at
once (``CLIENT UNBLOCK``); waiters fail with BrokerUnavailable, never hang, when Redis goes away;
and a cancel request reaches the job's owner by pub/sub, also after Redis comes back."""

from __future__ import annotations

import asyncio
import inspect
import random
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.broker.conftest import REDIS_MARKS, event, job, opened
from tests.broker.own_redis import own_redis
from zserve import pipeline, step
from zserve.broker.redis import COMMAND_CONNECTIONS, RedisBroker, split_url
from zserve.engine.plan import compile_plan
from zserve.errors import BrokerUnavailable
from zserve.events import JOB_QUEUED, STEP_CHUNK
from zserve.jobs import JobManager

pytestmark = [pytest.mark.anyio, *REDIS_MARKS]


async def until(predicate: Callable[[], Any], what: str, deadline_s: float = 30) -> Any:
    """The predicate's first true value (awaited, when it is a coroutine)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.01)
    pytest.fail(f"still not {what} after {deadline_s} s")


def connections(url: str, name: str) -> list[dict[str, Any]]:
    """The connections of the brokers whose URL says ``client_name=name`` (not this one's)."""
    base = split_url(url)[0].replace(f"client_name={name}", "")
    with redis.Redis.from_url(base, decode_responses=True) as client:
        return [c for c in client.client_list() if c.get("name") == name]


def blocked(url: str, name: str) -> list[dict[str, Any]]:
    return [c for c in connections(url, name) if "b" in c["flags"]]


def named(url: str) -> tuple[str, str]:
    name = f"zserve-tail-{uuid.uuid4().hex[:12]}"
    return f"{url}&client_name={name}", name


def chunk(job_id: str, i: int) -> Any:
    return event(STEP_CHUNK, job_id, "s", i=i)


async def test_many_waiters_share_one_blocking_connection_and_each_gets_its_events(
    url: str,
) -> None:
    url, name = named(url)
    jobs = [f"j{k}" for k in range(50)]
    afters = [1, 1, 2, 3]  # four waiters per job, on events to come
    async with opened(url) as broker:
        for job_id in jobs:
            await broker.create(job(job_id), event(JOB_QUEUED, job_id))
        waiters = {
            (job_id, i): asyncio.ensure_future(broker.wait(job_id, after, timeout=60))
            for job_id in jobs
            for i, after in enumerate(afters)
        }
        try:
            await until(lambda: broker.tailer.waiting == len(waiters), "all waiting")
            await until(lambda: blocked(url, name), "blocked in XREAD")
            conns = connections(url, name)
            blocking = blocked(url, name)
            print(
                f"\n{len(waiters)} waiters on {len(jobs)} jobs: {len(blocking)} blocking "
                f"connection ({blocking[0]['cmd']}), {len(conns)} connections in all "
                f"(the command pool opens at most {COMMAND_CONNECTIONS})"
            )
            assert len(blocking) == 1 and blocking[0]["cmd"] == "xread"
            assert len(conns) <= COMMAND_CONNECTIONS + 1
            for seq in (2, 3, 4):
                for job_id in jobs:
                    await broker.publish(job_id, [chunk(job_id, seq)])
                due = {k: w for k, w in waiters.items() if afters[k[1]] == seq - 1}
                got = await asyncio.wait_for(asyncio.gather(*due.values()), 30)
                for (job_id, _), events in zip(due, got, strict=True):
                    assert [(e.job_id, e.seq, e.data) for e in events] == [
                        (job_id, seq, {"i": seq})
                    ]
                pending = [w for k, w in waiters.items() if afters[k[1]] >= seq]
                assert not any(w.done() for w in pending)
            assert broker.tailer.waiting == 0
            assert len(connections(url, name)) <= COMMAND_CONNECTIONS + 1
        finally:
            for waiter in waiters.values():
                waiter.cancel()


async def test_a_waiter_that_comes_while_the_tailer_is_blocked_is_served_at_once(
    url: str,
) -> None:
    """A new stream, then an earlier ``after`` on a stream already read: each wakes the XREAD
    in flight (its block slice is 10 s)."""
    url, name = named(url)
    async with opened(url) as broker:
        for job_id in ("j1", "j2"):
            await broker.create(job(job_id), event(JOB_QUEUED, job_id))
        first = asyncio.ensure_future(broker.wait("j1", 5, timeout=60))  # seq 6 and on
        try:
            latencies = []
            for job_id, after in (("j2", 1), ("j1", 1)):
                await until(lambda: blocked(url, name), "blocked in XREAD")
                waiting = asyncio.ensure_future(broker.wait(job_id, after, timeout=60))
                await until(lambda: broker.tailer.waiting == 2, "waiting")
                began = time.perf_counter()
                await broker.publish(job_id, [chunk(job_id, after + 1)])
                got = await asyncio.wait_for(waiting, 30)
                latencies.append(time.perf_counter() - began)
                assert [(e.seq, e.data) for e in got] == [(after + 1, {"i": after + 1})]
                assert not first.done()
            print(
                "\na waiter that came during a blocked XREAD had its event, once published, after "
                + ", ".join(f"{t * 1000:.1f} ms" for t in latencies)
                + " (new stream, earlier after)"
            )
        finally:
            first.cancel()


async def test_the_tailer_reads_resp3_replies_too(url: str) -> None:
    async with opened(f"{url}&protocol=3") as broker:
        await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        waiting = asyncio.ensure_future(broker.wait("j1", 1, timeout=60))
        await until(lambda: broker.tailer.waiting == 1, "waiting")
        await broker.publish("j1", [chunk("j1", 2), chunk("j1", 3)])
        assert [e.seq for e in await asyncio.wait_for(waiting, 30)] == [2, 3]
        assert [e.seq for e in await broker.wait("j1", 1, timeout=60)] == [2, 3]


async def test_waiters_fail_with_broker_unavailable_when_redis_goes_away_and_wait_again_after(
    tmp_path: Path,
) -> None:
    with own_redis(tmp_path) as server:
        async with opened(server.url) as broker:
            for k in range(5):
                await broker.create(job(f"j{k}"), event(JOB_QUEUED, f"j{k}"))
            waiters = [asyncio.ensure_future(broker.wait(f"j{k % 5}", 1, 60)) for k in range(20)]
            await until(lambda: broker.tailer.waiting == 20, "all waiting")
            server.kill()
            began = time.perf_counter()
            failed = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 30)
            took = time.perf_counter() - began
            print(f"\n20 waiters failed {took:.3f} s after redis-server died")
            assert all(isinstance(f, BrokerUnavailable) for f in failed), failed
            assert broker.problem is not None and "unreachable" in broker.problem
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(broker.wait("j1", 1, timeout=60), 30)

            server.start()  # empty: it kept nothing
            await until(lambda: _answers(broker), "answering again")
            await broker.create(job("k1"), event(JOB_QUEUED, "k1"))
            waiting = asyncio.ensure_future(broker.wait("k1", 1, timeout=60))
            await until(lambda: broker.tailer.waiting == 1, "waiting")
            await broker.publish("k1", [chunk("k1", 2)])
            assert [e.seq for e in await asyncio.wait_for(waiting, 30)] == [2]
            assert broker.problem is None


async def test_a_redis_that_refuses_client_unblock_is_tailed_in_short_slices(
    tmp_path: Path,
) -> None:
    """An ACL without the CLIENT commands: a waiter that comes while the XREAD is blocked
    waits for the next short slice, not the 10 s one (it would time out after 5 s)."""
    with own_redis(tmp_path) as server:
        with redis.Redis(port=server.port) as admin:
            admin.acl_setuser(
                "limited", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                commands=["+@all", "-client"],
            )  # fmt: skip
        async with opened(f"redis://limited:pw@127.0.0.1:{server.port}/0?prefix=t:") as broker:
            for job_id in ("j1", "j2"):
                await broker.create(job(job_id), event(JOB_QUEUED, job_id))
            first = asyncio.ensure_future(broker.wait("j1", 5, timeout=60))
            try:
                await until(lambda: broker.tailer.waiting == 1, "waiting")
                await asyncio.sleep(0.05)  # its XREAD is on its way
                waiting = asyncio.ensure_future(broker.wait("j2", 1, timeout=5))
                await until(lambda: broker.tailer.waiting == 2, "waiting")
                await broker.publish("j2", [chunk("j2", 2)])
                assert [e.seq for e in await waiting] == [2]
                assert not first.done()
            finally:
                first.cancel()


async def _answers(broker: RedisBroker) -> bool:
    """Whether the broker can read again."""
    try:
        await broker.count_by_status()
    except BrokerUnavailable:
        return False
    return True


async def test_a_cancel_request_wakes_the_owner_on_another_host_at_once(url: str) -> None:
    """The owner hears of a cancel made through another broker (another host) by pub/sub;
    for comparison, the poll every 0.1 s owners relied on before."""
    async with opened(url) as owner, opened(url) as other:
        woken: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        listening = asyncio.ensure_future(
            owner.cancel_wakeups("w1", lambda j: woken.put_nowait((j, time.perf_counter())))
        )
        try:
            for k in range(41):
                running = job(f"j{k}", status="running", worker="w1")
                await owner.create(running, event(JOB_QUEUED, f"j{k}"))
            await owner.create(job("theirs", worker="w2"), event(JOB_QUEUED, "theirs"))
            await owner.create(job("nobody"), event(JOB_QUEUED, "nobody"))
            await _subscribed(url, "w1")

            latencies = []
            for k in range(30):
                if k == 10:  # not w1's jobs: no wake-up for w1
                    await other.request_cancel("theirs")
                    await other.request_cancel("nobody")
                began = time.perf_counter()
                await other.request_cancel(f"j{k}")
                job_id, at = await asyncio.wait_for(woken.get(), 30)
                assert job_id == f"j{k}"
                latencies.append(at - began)
            assert await owner.cancel_requested(["theirs", "nobody"]) == {"theirs", "nobody"}

            # the owners' poll before pub/sub: every 0.1 s, at a phase of its own
            polled_ids = [f"j{k}" for k in range(30, 41)]
            seen: dict[str, float] = {}
            poller = asyncio.ensure_future(_poll(owner, polled_ids, seen))
            polled = []
            try:
                for job_id in polled_ids:
                    await asyncio.sleep(random.uniform(0, 0.1))
                    began = time.perf_counter()
                    await other.request_cancel(job_id)
                    await until(lambda j=job_id: j in seen, "polled")
                    polled.append(seen[job_id] - began)
            finally:
                poller.cancel()
        finally:
            listening.cancel()
            with suppress(asyncio.CancelledError):
                await listening
    print(
        f"\ncancel request -> owner woken on another host: pub/sub p50 "
        f"{statistics.median(latencies) * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms "
        f"(polling every 0.1 s: p50 {statistics.median(polled) * 1000:.1f} ms)"
    )


@step
async def hold(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@pipeline
def holding(seconds: float = 60.0) -> float:
    return hold(seconds)


async def test_a_worker_cancels_its_job_when_another_worker_asks_without_polling(
    url: str,
) -> None:
    """Two job managers (workers of two hosts) on one Redis: the owner's poll is made too rare
    to matter, so its upkeep's pub/sub subscriber is what cancels the job."""
    owner_broker = RedisBroker(url)
    owner_broker.cancel_poll_s = 3600.0
    owner = JobManager(compile_plan(holding), owner_broker)
    other = JobManager(compile_plan(holding), RedisBroker(url))
    await owner.start()
    await other.start()
    try:
        await _subscribed(url, owner.worker_id)
        job_id = (await owner.submit({"seconds": 60.0}, None)).job_id
        await until(lambda: _status(owner, job_id, "running"), "running")
        began = time.perf_counter()
        await other.cancel(job_id)
        record = await until(lambda: _status(owner, job_id, "cancelled"), "cancelled")
        print(f"\nother.cancel() returned {(time.perf_counter() - began) * 1000:.1f} ms after "
              "it asked (cancelled by pub/sub; it polls for the end every 50 ms)")  # fmt: skip
        assert record.worker == owner.worker_id
    finally:
        await other.shutdown(1)
        await owner.shutdown(1)


async def _status(manager: JobManager, job_id: str, status: str) -> Any:
    """The job's record once it has ``status``, else None."""
    record = await manager.broker.get(job_id)
    return record if record is not None and record.status == status else None


async def _poll(broker: RedisBroker, job_ids: list[str], seen: dict[str, float]) -> None:
    while True:
        await asyncio.sleep(0.1)
        for job_id in await broker.cancel_requested(job_ids):
            seen.setdefault(job_id, time.perf_counter())


async def _subscribed(url: str, worker: str) -> None:
    client_url, prefix = split_url(url)
    channel = f"{prefix}cancel:{worker}"

    def count() -> int:
        with redis.Redis.from_url(client_url, decode_responses=True) as client:
            return int(dict(client.pubsub_numsub(channel)).get(channel, 0))

    await until(count, "subscribed")


async def test_the_owner_subscribes_again_after_redis_comes_back(tmp_path: Path) -> None:
    with own_redis(tmp_path) as server:
        async with opened(server.url) as owner, opened(server.url) as other:
            woken: asyncio.Queue[str] = asyncio.Queue()
            listening = asyncio.ensure_future(owner.cancel_wakeups("w1", woken.put_nowait))
            try:
                await owner.create(job("a", worker="w1"), event(JOB_QUEUED, "a"))
                await _subscribed(server.url, "w1")
                await other.request_cancel("a")
                assert await asyncio.wait_for(woken.get(), 30) == "a"

                server.kill()
                await asyncio.sleep(0.2)  # the subscriber finds out, and retries
                server.start()
                await until(lambda: _answers(other), "answering again")
                await other.create(job("b", worker="w1"), event(JOB_QUEUED, "b"))
                # a request made before it subscribed again is not heard (the poll finds it)
                await _subscribed(server.url, "w1")
                await other.request_cancel("b")
                assert await asyncio.wait_for(woken.get(), 30) == "b"
            finally:
                listening.cancel()
                with suppress(asyncio.CancelledError):
                    await listening
