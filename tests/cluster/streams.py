"""Reading job event streams from the cluster's hosts, and checking and measuring what came."""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse, connect_sse

#: The client never waits longer than this for anything (connect, a read): no hang.
CLIENT_TIMEOUT = httpx.Timeout(30, connect=5)


@dataclass
class Received:
    """What one SSE connection got: each event's JSON and when it arrived (``time.time()``),
    and whether the stream ended with a terminal event or was closed before one."""

    events: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1]["event"] in TERMINAL

    def add(self, data: str, event: str, event_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(data)
        assert event == doc["event"] and int(event_id) == doc["seq"], (event, event_id, doc)
        self.events.append(doc)
        self.arrived.append(time.time())
        return doc


TERMINAL = frozenset({"job.completed", "job.failed", "job.cancelled"})


def _headers(last_event_id: int | None) -> dict[str, str]:
    return {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}


async def astream(
    client: httpx.AsyncClient, url: str, job_id: str, last_event_id: int | None = None
) -> Received:
    """Every event of ``GET /stream/{job_id}`` until the server ends the stream."""
    got = Received()
    async with aconnect_sse(
        client, "GET", f"{url}/stream/{job_id}", headers=_headers(last_event_id)
    ) as source:
        async for sse in source.aiter_sse():
            if sse.data:  # a block without data (a ``retry:`` alone) is no event
                got.add(sse.data, sse.event, sse.id)
    return got


def stream(
    url: str,
    job_id: str,
    last_event_id: int | None = None,
    until_seq: int | None = None,
    into: Received | None = None,
) -> Received:
    """Events of ``GET /stream/{job_id}`` until the stream ends, or (``until_seq``) until that
    seq has come: then the client closes the connection itself. ``into``: where they go, as
    they come (another thread may look)."""
    got = Received() if into is None else into
    with (
        httpx.Client(timeout=CLIENT_TIMEOUT) as client,
        connect_sse(client, "GET", f"{url}/stream/{job_id}", headers=_headers(last_event_id))
        as source,
    ):  # fmt: skip
        for sse in source.iter_sse():
            if not sse.data:  # a block without data (a ``retry:`` alone) is no event
                continue
            doc = got.add(sse.data, sse.event, sse.id)
            if until_seq is not None and doc["seq"] >= until_seq:
                break
    return got


def faults(seen: list[int], truth: list[int]) -> dict[str, int]:
    """How ``seen`` (the seqs a client got, in order) differs from ``truth`` (every seq of the
    job): events lost, duplicated and out of order."""
    return {
        "lost": len(set(truth) - set(seen)),
        "duplicated": len(seen) - len(set(seen)),
        "out_of_order": sum(1 for a, b in itertools.pairwise(seen) if b <= a),
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]  # nearest rank


def figures_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"max {max(ms):.1f} ms (n={len(ms)})"
    )
