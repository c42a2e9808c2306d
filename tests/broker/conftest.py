"""One fixture for the broker contract, run against every broker implementation."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from zserve.broker import Broker, MemoryBroker
from zserve.broker.sqlite import SQLiteBroker
from zserve.events import Event
from zserve.records import JobRecord

T = TypeVar("T")


def job(job_id: str, created_at: float | None = None, **fields: Any) -> JobRecord:
    return JobRecord(job_id, time.time() if created_at is None else created_at, **fields)


def event(type_: str, job_id: str, step: str | None = None, **data: Any) -> Event:
    return Event(type_, job_id, time.time(), step, data)


@dataclass
class Harness:
    """Makes brokers of one kind and drives a scenario on a fresh broker of that kind."""

    kind: str
    path: Path

    def make(self) -> Broker:
        return MemoryBroker() if self.kind == "memory" else SQLiteBroker(str(self.path))

    async def run(self, scenario: Callable[[Broker], Awaitable[T]]) -> T:
        broker = self.make()
        await broker.start()
        try:
            return await scenario(broker)
        finally:
            await broker.close()


@pytest.fixture(params=["memory", "sqlite"])
def brokers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield Harness(request.param, tmp_path / "broker.db")
