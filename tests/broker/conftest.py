"""One fixture for the broker contract, run against every broker implementation: memory,
SQLite, and Redis when ``ZSERVE_TEST_REDIS_URL`` names a server (``scripts/test-services``
starts one); each Redis test has a key prefix of its own, whose keys are deleted afterwards."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from zserve.broker import Broker, MemoryBroker
from zserve.broker.sqlite import SQLiteBroker
from zserve.events import Event
from zserve.records import JobRecord

if TYPE_CHECKING:
    from zserve.broker.redis import RedisBroker

T = TypeVar("T")

REDIS_URL_ENV = "ZSERVE_TEST_REDIS_URL"
REDIS_SKIP_REASON = (
    f"{REDIS_URL_ENV} is not set: run scripts/test, or "
    '`eval "$(scripts/test-services)"` first, to test the broker on Redis too'
)


def redis_url() -> str | None:
    """The Redis URL the tests were given, or None."""
    return os.environ.get(REDIS_URL_ENV) or None


def job(job_id: str, created_at: float | None = None, **fields: Any) -> JobRecord:
    return JobRecord(job_id, time.time() if created_at is None else created_at, **fields)


def event(type_: str, job_id: str, step: str | None = None, **data: Any) -> Event:
    return Event(type_, job_id, time.time(), step, data)


@dataclass
class Harness:
    """Makes brokers of one kind and drives a scenario on a fresh broker of that kind."""

    kind: str
    path: Path
    #: the Redis broker's URL, with this test's own key prefix
    url: str = ""

    def make(self) -> Broker:
        if self.kind == "redis":
            from zserve.broker.redis import RedisBroker

            return RedisBroker(self.url)
        return MemoryBroker() if self.kind == "memory" else SQLiteBroker(str(self.path))

    async def run(self, scenario: Callable[[Broker], Awaitable[T]]) -> T:
        broker = self.make()
        await broker.start()
        try:
            return await scenario(broker)
        finally:
            await broker.close()


@contextmanager
def redis_namespace(url: str) -> Iterator[str]:
    """``url`` with a key prefix of its own (``?prefix=``); its keys are deleted on exit."""
    import redis

    prefix = f"zserve-test-{uuid.uuid4().hex}:"
    joiner = "&" if "?" in url else "?"
    try:
        yield f"{url}{joiner}prefix={prefix}"
    finally:
        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)


#: Skipped by a mark rather than in the fixture, so that -ra sums the skips up per file.
REDIS_MARKS = [pytest.mark.redis] + (
    [] if redis_url() else [pytest.mark.skip(reason=REDIS_SKIP_REASON)]
)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=REDIS_MARKS)])
def brokers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param != "redis":
        yield Harness(request.param, tmp_path / "broker.db")
        return
    url = redis_url()
    assert url is not None
    with redis_namespace(url) as namespaced:
        yield Harness("redis", tmp_path / "broker.db", namespaced)


@pytest.fixture
def url() -> Iterator[str]:
    """A Redis URL with a key prefix of this test's own (for the Redis-only tests)."""
    base = redis_url()
    assert base is not None
    with redis_namespace(base) as namespaced:
        yield namespaced


@asynccontextmanager
async def opened(url: str, **kwargs: float) -> AsyncIterator[RedisBroker]:
    """A started Redis broker on ``url``, closed on exit."""
    from zserve.broker import open_broker
    from zserve.broker.redis import RedisBroker

    broker = open_broker(url, **kwargs)
    assert isinstance(broker, RedisBroker)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()
