"""Idempotency keys in the broker contract (``create(..., idempotency=...)``), on every broker:
one key makes one job, even when many tasks (and, for SQLite and Redis, many processes' brokers)
create with it at the same moment; the key is forgotten with its job."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from tests.broker.conftest import REDIS_MARKS, Harness, event, job, redis_namespace, redis_url
from zserve.broker import Broker
from zserve.broker.base import IdempotencyKey, KeyHeld
from zserve.broker.sqlite import SQLiteBroker
from zserve.broker.sqlite_schema import LAYOUT
from zserve.events import JOB_COMPLETED, JOB_QUEUED, JOB_STARTED

pytestmark = pytest.mark.anyio

KEY = IdempotencyKey("order-42: retry me", "fp-1")


async def create(b: Broker, job_id: str, key: IdempotencyKey | None = KEY) -> str:
    """Create ``job_id`` under ``key``: the id of the job that has the key afterwards."""
    try:
        await b.create(job(job_id), event(JOB_QUEUED, job_id), key)
    except KeyHeld as held:
        return held.job_id
    return job_id


async def finish(b: Broker, job_id: str) -> None:
    await b.publish(job_id, [event(JOB_STARTED, job_id)], {"status": "running", "worker": "w"})
    await b.finish(job_id, event(JOB_COMPLETED, job_id), {"finished_at": time.time()})


async def test_a_second_create_with_the_key_names_the_first_job_and_writes_nothing(
    brokers: Harness,
) -> None:
    async def scenario(b: Broker) -> None:
        await b.create(job("first"), event(JOB_QUEUED, "first"), KEY)
        for fingerprint in ("fp-1", "another request"):
            with pytest.raises(KeyHeld) as held:
                again = IdempotencyKey(KEY.key, fingerprint)
                await b.create(job("second"), event(JOB_QUEUED, "second"), again)
            # the holder, with the fingerprint of the request that created it
            assert (held.value.job_id, held.value.fingerprint) == ("first", "fp-1")
        assert await b.get("second") is None and await b.events("second") == []
        assert [j.job_id for j in await b.list_jobs()] == ["first"]
        assert await b.count_by_status() == {"queued": 1}
        # other keys, and no key, are not held
        assert await create(b, "other", IdempotencyKey("order-43", "fp-1")) == "other"
        assert await create(b, "plain", None) == "plain"
        # the holder is still the holder while it runs and once it finished
        await finish(b, "first")
        assert await create(b, "third") == "first"

    await brokers.run(scenario)


async def test_twenty_concurrent_creates_with_one_key_make_one_job(brokers: Harness) -> None:
    async def scenario(b: Broker) -> None:
        holders = await asyncio.gather(*(create(b, f"j{i}") for i in range(20)))
        winner = holders[0]
        assert set(holders) == {winner}, holders
        assert [j.job_id for j in await b.list_jobs()] == [winner]
        assert [e.seq for e in await b.events(winner)] == [1]

    await brokers.run(scenario)


async def test_the_key_is_forgotten_with_its_job(brokers: Harness) -> None:
    async def scenario(b: Broker) -> None:
        await create(b, "first")
        await finish(b, "first")
        await create(b, "running")  # held by "first": nothing made
        await create(b, "open", IdempotencyKey("open-key", "fp"))
        assert await b.prune(before=time.time() + 60, keep=0) == 1
        assert await b.get("first") is None
        # a new job takes the key; an unfinished job keeps its own
        assert await create(b, "second") == "second"
        assert await create(b, "third", IdempotencyKey("open-key", "fp")) == "open"

    await brokers.run(scenario)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=REDIS_MARKS)])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return Harness(request.param, tmp_path / "broker.db")


async def test_two_brokers_on_one_store_make_one_job_per_key(
    shared: Harness, tmp_path: Path
) -> None:
    """Two processes' brokers (two connections, for Redis two hosts) race with one key."""

    async def race(harness: Harness) -> None:
        first, second = harness.make(), harness.make()
        await first.start()
        await second.start()
        try:
            holders = await asyncio.gather(
                *(create(b, f"{n}{i}") for i in range(10) for n, b in [("a", first), ("b", second)])
            )
            assert len(set(holders)) == 1, holders
            for b in (first, second):
                assert [j.job_id for j in await b.list_jobs()] == holders[:1]
        finally:
            await first.close()
            await second.close()

    if shared.kind == "sqlite":
        await race(shared)
        return
    url = redis_url()
    assert url is not None
    with redis_namespace(url) as namespaced:
        await race(Harness("redis", tmp_path, namespaced))


async def test_redis_keeps_the_key_as_long_as_its_job(tmp_path: Path) -> None:
    """With a job TTL, the key expires with the job; pruning deletes it with the job."""
    pytest.importorskip("redis")
    url = redis_url()
    if url is None:
        pytest.skip("ZSERVE_TEST_REDIS_URL is not set")
    import redis

    from zserve.broker.redis import RedisBroker, split_url

    with redis_namespace(url) as namespaced:
        broker = RedisBroker(namespaced, job_ttl_s=600)
        client_url, prefix = split_url(namespaced)
        await broker.start()
        try:
            await create(broker, "first")
            with redis.Redis.from_url(client_url) as r:
                idem = f"{prefix}idem:{KEY.key}"
                assert r.get(idem) == b"first" and r.pttl(idem) == -1  # no TTL while it runs
                await finish(broker, "first")
                ttl, job_ttl = r.pttl(idem), r.pttl(f"{prefix}job:first")
                print(f"\nidempotency key TTL {ttl} ms, its job's {job_ttl} ms")
                assert 0 < ttl <= 600_000 and abs(ttl - job_ttl) < 1000
                # the job expired (as Redis does after the TTL), its key not yet: stale
                r.delete(f"{prefix}job:first")
                assert await create(broker, "second") == "second"
                assert r.get(idem) == b"second"
                await finish(broker, "second")
                assert await broker.prune(before=time.time() + 60, keep=0) >= 1
                assert r.exists(idem) == 0
                left = sorted(k.decode() for k in r.scan_iter(match=f"{prefix}*"))
                assert not [k for k in left if "second" in k or "idem:" in k], left
        finally:
            await broker.close()


async def test_a_layout_1_sqlite_file_is_upgraded_in_place_and_keeps_its_jobs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "broker.db"
    broker = SQLiteBroker(str(path))
    await broker.start()
    await broker.create(job("old"), event(JOB_QUEUED, "old"))
    await broker.close()
    with sqlite3.connect(path) as db:  # as zserve of layout 1 left it
        db.execute("DROP TABLE idem")
        db.execute("PRAGMA user_version = 1")
    broker = SQLiteBroker(str(path))
    await broker.start()
    try:
        assert broker.problem is None
        assert [j.job_id for j in await broker.list_jobs()] == ["old"]
        assert await create(broker, "new") == "new"
        assert await create(broker, "again") == "new"
    finally:
        await broker.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (LAYOUT,) == (2,)
