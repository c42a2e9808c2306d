"""``Handoff.until``: a followed stream stops at its next step once the handoff begins (at once
when it has begun), and nothing changes when the broker is not shared by many hosts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from zserve.server.handoff import HANDOFF, HandedOff, Handoff


async def ticking(stop_at: int | None = None) -> AsyncIterator[int]:
    """0, 1, 2, ... one every 10 ms (up to ``stop_at``)."""
    n = 0
    while stop_at is None or n < stop_at:
        yield n
        n += 1
        await asyncio.sleep(0.01)


async def waiting(closed: list[bool]) -> AsyncIterator[int]:
    """One value, then nothing for a long time (a job between events)."""
    try:
        yield 0
        await asyncio.sleep(3600)
        yield 1
    finally:
        closed.append(True)


def test_a_stream_waiting_for_an_event_stops_when_the_handoff_begins() -> None:
    async def scenario() -> tuple[list[int], list[bool]]:
        handoff = Handoff(enabled=True)
        closed: list[bool] = []
        got: list[int] = []

        async def read() -> None:
            async for value in handoff.until(waiting(closed)):
                got.append(value)
                asyncio.get_running_loop().call_soon(handoff.begin)

        with pytest.raises(HandedOff):
            await asyncio.wait_for(read(), 10)
        await asyncio.sleep(0)  # the cancelled follower finishes
        return got, closed

    got, closed = asyncio.run(scenario())
    assert got == [0]
    assert closed == [True]  # the broker is not followed any more


def test_once_begun_a_new_stream_is_handed_over_before_any_event() -> None:
    async def scenario() -> list[int]:
        handoff = Handoff(enabled=True)
        handoff.begin()
        got: list[int] = []
        with pytest.raises(HandedOff):
            async for value in handoff.until(ticking()):
                got.append(value)
        return got

    assert asyncio.run(scenario()) == []


def test_a_stream_that_ends_before_the_handoff_ends_as_it_does() -> None:
    async def scenario() -> list[int]:
        handoff = Handoff(enabled=True)
        return [value async for value in handoff.until(ticking(3))]

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_nothing_is_handed_over_when_the_broker_is_not_shared_by_many_hosts() -> None:
    async def scenario() -> list[int]:
        handoff = Handoff(enabled=False)
        handoff.begin()
        return [value async for value in handoff.until(ticking(3))]

    assert asyncio.run(scenario()) == [0, 1, 2]


def test_the_end_of_a_handed_over_sse_stream_is_a_retry_and_no_event() -> None:
    lines = HANDOFF.decode().splitlines()
    assert lines[0].startswith(":") and lines[1] == "retry: 500" and HANDOFF.endswith(b"\n\n")


def test_only_a_broker_many_hosts_share_hands_streams_over() -> None:
    from zserve.broker import MemoryBroker
    from zserve.broker.redis import RedisBroker
    from zserve.broker.sqlite import SQLiteBroker

    # SQLite is shared by the workers of one host, which all stop together: no handoff
    assert (MemoryBroker.multi_host, SQLiteBroker.multi_host) == (False, False)
    assert SQLiteBroker.shared and RedisBroker.shared and RedisBroker.multi_host
