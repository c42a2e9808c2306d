"""Fencing on the Redis broker: a job taken from an owner whose lease ran out (``reap``) can no
longer be written by that owner when it comes back, an owner that renewed its lease in time
keeps its job, and a write retried after its answer was lost is not written twice.

Each "host" is a ``RedisBroker`` instance of its own, as each zserve host has."""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis

from tests.broker.conftest import REDIS_MARKS, event, job, opened
from zserve.broker.redis import RedisBroker, split_url
from zserve.broker.redis_rows import encode as _encode
from zserve.events import JOB_COMPLETED, JOB_FAILED, JOB_QUEUED, JOB_STARTED, STEP_CHUNK
from zserve.jobs.outcome import WORKER_LOST, Outcome, terminal

pytestmark = [pytest.mark.anyio, *REDIS_MARKS]


def fence_of(url: str, job_id: str) -> int:
    client_url, prefix = split_url(url)
    with redis.Redis.from_url(client_url) as client:
        return int(client.hget(f"{prefix}job:{job_id}", ":fence") or 0)


async def start_running(owner: RedisBroker, job_id: str, worker: str) -> None:
    await owner.create(job(job_id, worker=worker), event(JOB_QUEUED, job_id))
    await owner.publish(job_id, [event(JOB_STARTED, job_id)], {"status": "running"})


async def test_a_zombie_owner_cannot_write_to_a_job_taken_from_it(url: str) -> None:
    async with opened(url) as zombie, opened(url) as sweeper:
        await start_running(zombie, "j1", "zombie")
        await zombie.heartbeat("zombie", 0.05)
        await sweeper.heartbeat("sweeper", 60)
        time.sleep(0.1)  # the zombie's lease runs out (a partition, a long pause)
        now = time.time()
        [lost] = await sweeper.expired(now)
        reaped = await sweeper.reap(lost, *terminal(lost, Outcome.failed(WORKER_LOST)), now)
        assert reaped is not None and reaped.seq == 3
        assert fence_of(url, "j1") == 2

        # the zombie comes back: it renews its lease, then tries to go on with the job
        await zombie.heartbeat("zombie", 60)
        assert await zombie.publish("j1", [event(STEP_CHUNK, "j1", "s", i=0)]) == []
        assert await zombie.publish("j1", [], {"steps": []}) == []
        done = event(JOB_COMPLETED, "j1", outputs={"output": 1})
        assert await zombie.finish("j1", done, {"finished_at": time.time()}) is None

        record = await sweeper.get("j1")
        assert record is not None and record.status == "failed"
        assert record.error is not None and record.error["reason"] == "worker_lost"
        assert [e.type for e in await sweeper.events("j1")] == [JOB_QUEUED, JOB_STARTED, JOB_FAILED]


async def test_an_owner_that_renewed_its_lease_in_time_keeps_its_job(url: str) -> None:
    """The sweeper found the lease expired, but the owner renewed it before the sweeper acted:
    the reap is refused (it checks the lease again, in the same step as the write)."""
    async with opened(url) as owner, opened(url) as sweeper:
        await start_running(owner, "j1", "slow-owner")
        await owner.heartbeat("slow-owner", 0.05)
        time.sleep(0.1)
        now = time.time()
        [lost] = await sweeper.expired(now)
        await owner.heartbeat("slow-owner", 60)  # just in time
        assert await sweeper.reap(lost, *terminal(lost, Outcome.failed(WORKER_LOST)), now) is None
        assert fence_of(url, "j1") == 1
        placed = await owner.publish("j1", [event(STEP_CHUNK, "j1", "s", i=0)])
        assert [e.seq for e in placed] == [3]
        end = await owner.finish("j1", event(JOB_COMPLETED, "j1"), {"finished_at": time.time()})
        assert end is not None and end.seq == 4
        record = await sweeper.get("j1")
        assert record is not None and record.status == "completed"


async def test_a_reap_leaves_jobs_of_another_owner_and_finished_jobs_alone(url: str) -> None:
    async with opened(url) as owner, opened(url) as sweeper:
        await start_running(owner, "j1", "w1")
        await start_running(owner, "j2", "w1")
        await owner.finish("j2", event(JOB_COMPLETED, "j2"), {"finished_at": time.time()})
        now = time.time() + 3600  # every lease ran out by then
        [lost] = await sweeper.expired(now)
        stale = dataclasses.replace(lost, worker="someone-else")
        ended = terminal(lost, Outcome.failed(WORKER_LOST))
        assert await sweeper.reap(stale, *ended, now) is None  # not that owner's job
        done = await sweeper.get("j2")
        assert done is not None
        assert await sweeper.reap(done, *terminal(done, Outcome.failed(WORKER_LOST)), now) is None
        assert (await sweeper.reap(lost, *ended, now)) is not None


async def test_a_write_retried_after_its_answer_was_lost_is_not_written_twice(url: str) -> None:
    """redis-py sends a script again when its answer did not come (a timeout, a dropped
    connection): the second run of the same write must find it done. The same script call is
    run twice here, as that retry does."""
    async with opened(url) as owner, opened(url) as other:
        await start_running(owner, "j1", "w1")  # seqs 1, 2; the owner wrote 2 events
        chunks = [event(STEP_CHUNK, "j1", "s", i=i) for i in range(3)]
        args = ["j1", "1", "2", "0", *(_encode(e) for e in chunks)]
        keys = [owner._job("j1"), owner._stream("j1")]
        first = await owner._publish(keys=keys, args=[owner.prefix, *args])
        again = await owner._publish(keys=keys, args=[owner.prefix, *args])
        assert first == again == 3
        # a retry whose batch grew meanwhile writes only what is new
        grown = [*args, _encode(event(STEP_CHUNK, "j1", "s", i=3))]
        assert await owner._publish(keys=keys, args=[owner.prefix, *grown]) == 3
        # another host's write in between does not confuse the owner's count
        await other.publish("j1", [event(STEP_CHUNK, "j1", "s", i=99)])
        seen = [e.data["i"] for e in await other.events("j1") if e.type == STEP_CHUNK]
        assert seen == [0, 1, 2, 3, 99]

        # a finish retried the same way gets its own terminal event's seq, once
        ending = [owner._job("j1"), owner._stream("j1")]
        end_args = [owner.prefix, "j1", "1", "0", "1", "status", '"completed"']
        end_args.append(_encode(event(JOB_COMPLETED, "j1")))
        assert await owner._finish(keys=ending, args=end_args) == 8
        assert await owner._finish(keys=ending, args=end_args) == 8
        # a different terminal event, or no fence, is refused
        other_end = [*end_args[:-1], _encode(event(JOB_FAILED, "j1"))]
        assert await owner._finish(keys=ending, args=other_end) == -1
        assert await owner._finish(keys=ending, args=[owner.prefix, "j1", "", *end_args[3:]]) == -1
        types = [e.type for e in await other.events("j1")]
        assert types.count(JOB_COMPLETED) == 1 and types[-1] == JOB_COMPLETED
