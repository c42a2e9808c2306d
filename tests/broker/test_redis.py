"""What only the Redis broker promises: brokers on other hosts (instances) see each other at
once, its keys are laid out as docs/architecture.md says, finished jobs expire in Redis itself,
and a Redis that does not answer is a BrokerUnavailable, never a hang."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import redis

from tests.broker.conftest import REDIS_MARKS, event, job, opened
from zserve.broker import open_broker
from zserve.broker.redis import split_url
from zserve.errors import BrokerUnavailable, UsageError
from zserve.events import JOB_COMPLETED, JOB_QUEUED, JOB_STARTED, STEP_CHUNK, STEP_STARTED

pytestmark = [pytest.mark.anyio, *REDIS_MARKS]


def test_the_url_names_the_key_prefix() -> None:
    assert split_url("redis://:pw@h:1/2") == ("redis://:pw@h:1/2", "zserve:")
    assert split_url("rediss://h/0?prefix=a:b:&socket_timeout=3") == (
        "rediss://h/0?socket_timeout=3",
        "a:b:",
    )


def test_an_unknown_scheme_names_the_redis_one() -> None:
    with pytest.raises(UsageError, match="redis://"):
        open_broker("mongodb://x")


async def test_a_job_is_a_hash_and_its_events_a_stream_whose_ids_are_the_seqs(url: str) -> None:
    async with opened(url) as broker:
        assert (broker.kind, broker.shared, broker.problem) == ("redis", True, None)
        await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        await broker.publish("j1", [event(JOB_STARTED, "j1"), event(STEP_STARTED, "j1", "a")])
    client = redis.Redis.from_url(split_url(url)[0], decode_responses=True)
    with client:
        prefix = split_url(url)[1]
        ids = [entry_id for entry_id, _ in client.xrange(f"{prefix}ev:j1")]
        fields = client.hgetall(f"{prefix}job:j1")
        status = client.type(f"{prefix}job:j1")
    assert ids == ["1-0", "2-0", "3-0"]
    assert status == "hash" and fields["status"] == '"queued"' and fields[":seq"] == "3"


async def test_a_wait_on_one_host_wakes_on_another_hosts_write(url: str) -> None:
    async with opened(url) as host1, opened(url) as host2:
        await host1.create(job("j1"), event(JOB_QUEUED, "j1"))
        waiting = asyncio.ensure_future(host2.wait("j1", 1, timeout=60))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await host1.publish("j1", [event(STEP_CHUNK, "j1", "s", i=0)], {"status": "running"})
        woken = await asyncio.wait_for(waiting, 10)
        # and the other way round, for the terminal event and the cancel request
        await host2.request_cancel("j1")
        assert await host1.cancel_requested(["j1"]) == {"j1"}
        ending = asyncio.ensure_future(host1.wait("j1", 2, timeout=60))
        await host2.finish("j1", event(JOB_COMPLETED, "j1"), {"finished_at": time.time()})
        ended = await asyncio.wait_for(ending, 10)
        assert await host1.cancel_requested(["j1"]) == set()
    assert [(e.seq, e.data) for e in woken] == [(2, {"i": 0})]
    assert [(e.seq, e.type) for e in ended] == [(3, JOB_COMPLETED)]


async def test_many_waiters_do_not_starve_commands(url: str) -> None:
    """Blocked reads hold connections of their own pool: commands go on meanwhile."""
    async with opened(url) as broker:
        await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        waiters = [asyncio.ensure_future(broker.wait("j1", 1, timeout=60)) for _ in range(50)]
        await asyncio.sleep(0.2)
        for i in range(20):
            await broker.create(job(f"other{i}"), event(JOB_QUEUED, f"other{i}"))
        assert not any(w.done() for w in waiters)
        await broker.publish("j1", [event(STEP_CHUNK, "j1", "s", i=1)])
        got = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert {tuple(e.seq for e in g) for g in got} == {(2,)}


async def test_finished_jobs_expire_in_redis_after_the_job_ttl(url: str) -> None:
    prefix = split_url(url)[1]
    async with opened(url, job_ttl_s=600.0) as broker:
        await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        await broker.create(job("j2"), event(JOB_QUEUED, "j2"))
        await broker.finish("j1", event(JOB_COMPLETED, "j1"), {"finished_at": time.time()})
    with redis.Redis.from_url(split_url(url)[0]) as client:
        ttls = [client.pttl(f"{prefix}{k}") for k in ("job:j1", "ev:j1", "job:j2", "ev:j2")]
    assert all(500_000 < t <= 600_000 for t in ttls[:2]), ttls
    assert ttls[2:] == [-1, -1]  # unfinished jobs stay


async def test_publish_refuses_what_only_finish_may_do(url: str) -> None:
    async with opened(url) as broker:
        await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        with pytest.raises(ValueError, match="finish"):
            await broker.publish("j1", [event(JOB_COMPLETED, "j1")])
        with pytest.raises(ValueError, match="finish"):
            await broker.publish("j1", [], {"status": "completed"})
        with pytest.raises(ValueError, match="bogus"):
            await broker.publish("j1", [], {"bogus": 1})
        with pytest.raises(ValueError, match="terminal"):
            await broker.finish("j1", event(JOB_STARTED, "j1"), {})
        with pytest.raises(ValueError, match="exists"):
            await broker.create(job("j1"), event(JOB_QUEUED, "j1"))
        record = await broker.get("j1")
        assert record is not None and record.status == "queued"
        assert len(await broker.events("j1")) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once it is closed


async def test_an_unreachable_redis_is_a_problem_and_broker_unavailable_not_a_hang() -> None:
    broker = open_broker(f"redis://:secret@127.0.0.1:{_closed_port()}/0")
    await asyncio.wait_for(broker.start(), 30)  # a worker starts all the same
    try:
        assert broker.problem is not None and "unreachable" in broker.problem
        assert "secret" not in broker.problem
        with pytest.raises(BrokerUnavailable) as raised:
            await asyncio.wait_for(broker.create(job("j1"), event(JOB_QUEUED, "j1")), 30)
        assert not raised.value.lasting
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(broker.wait("j1", 0, timeout=60), 30)
    finally:
        await broker.close()


def test_a_server_whose_redis_is_down_refuses_async_submits_with_retry_after_and_serves_sync(
    make_client: Any,
) -> None:
    """Sync ``/invoke`` and the probes never touch Redis; an async submit is a 503 problem with
    ``Retry-After`` (the broker may come back), never a hang."""
    client = make_client(
        "zserve.examples.weather:weather_pipeline",
        broker_url=f"redis://:secret@127.0.0.1:{_closed_port()}/0",
    )
    assert client.post("/invoke", json={"parameters": {"city": "Paris"}}).status_code == 200
    refused = client.post("/invoke?mode=async", json={"parameters": {"city": "Paris"}})
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/broker-unavailable")
    assert refused.headers["retry-after"] == "2"
    assert "secret" not in refused.text
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/health").json()["status"] == "degraded"
