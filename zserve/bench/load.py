"""The load: connections that send the same request again and again, in a closed loop (each of
``concurrency`` connections sends its next request when the last one is answered) or an open
loop (``rate`` requests a second, each due at its own time; latency counts from that time, so a
server that falls behind cannot hide its queue: no coordinated omission).

One process runs one event loop; ``Tally`` is what a process counted, and merges exactly with
the tallies of other client processes (see ``zserve.bench.procs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from zserve.bench.http import Answer, Connection, Target, build_request
from zserve.bench.stats import Latency

__all__ = ["ABORT_STATUSES", "LoadSpec", "Tally", "run_phase", "run_spec"]

#: Answers that mean the request itself is wrong: the run stops at the first one.
ABORT_STATUSES = frozenset({400, 401, 403, 404, 405, 413, 415, 422})
#: The request header that asks the server for a Server-Timing answer header.
TIMING_HEADER = {"Zserve-Timing": "1"}


@dataclass(frozen=True)
class LoadSpec:
    url: str
    body: bytes
    auth_key: str | None = None
    mode: str = "sync"
    concurrency: int = 1
    requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    warmup_s: float = 0.0
    rate: float | None = None
    timeout_s: float = 30.0

    def part(self, index: int, of: int) -> LoadSpec:
        """This spec's share for client process ``index`` of ``of``."""

        def share(total: int) -> int:
            return total // of + (1 if index < total % of else 0)

        return replace(
            self,
            concurrency=share(self.concurrency),
            requests=None if self.requests is None else share(self.requests),
            warmup_requests=share(self.warmup_requests),
            rate=None if self.rate is None else self.rate / of,
        )


@dataclass
class Tally:
    """What one phase of one process counted."""

    latency: Latency = field(default_factory=Latency)
    first_event: Latency = field(default_factory=Latency)
    engine: Latency = field(default_factory=Latency)
    step_ms: dict[str, float] = field(default_factory=dict)
    ok: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    #: the first answer that means the request is wrong: (status, body)
    refused: tuple[int, str] | None = None
    interrupted: bool = False

    @property
    def done(self) -> int:
        return self.ok + sum(self.errors.values())

    def merge(self, other: Tally) -> None:
        for mine, theirs in ((self.latency, other.latency), (self.engine, other.engine),
                             (self.first_event, other.first_event)):  # fmt: skip
            mine.add(theirs)
        for name, ms in other.step_ms.items():
            self.step_ms[name] = self.step_ms.get(name, 0.0) + ms
        self.ok += other.ok
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.cpu_s += other.cpu_s
        self.refused = self.refused or other.refused
        self.interrupted = self.interrupted or other.interrupted

    def to_dict(self) -> dict[str, Any]:
        """For another process (histograms encoded)."""
        return {
            "latency": self.latency.encode(), "first_event": self.first_event.encode(),
            "engine": self.engine.encode(), "step_ms": dict(self.step_ms), "ok": self.ok,
            "statuses": dict(self.statuses), "errors": dict(self.errors),
            "elapsed_s": self.elapsed_s, "cpu_s": self.cpu_s, "refused": self.refused,
            "interrupted": self.interrupted,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Tally:
        return cls(
            Latency.decode(doc["latency"]), Latency.decode(doc["first_event"]),
            Latency.decode(doc["engine"]), dict(doc["step_ms"]), doc["ok"],
            Counter(doc["statuses"]), Counter(doc["errors"]), doc["elapsed_s"], doc["cpu_s"],
            doc["refused"], doc["interrupted"],
        )  # fmt: skip


class Phase:
    """How much of a phase is left: a number of requests, or a deadline, or both."""

    def __init__(self, requests: int | None, duration_s: float | None) -> None:
        self.left = requests
        self.deadline = None if duration_s is None else time.perf_counter() + duration_s
        self.stopped = False

    def take(self) -> bool:
        if self.stopped:
            return False
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            self.stopped = True
            return False
        if self.left is not None:
            if self.left <= 0:
                self.stopped = True
                return False
            self.left -= 1
        return True


class Client:
    """The requests of a spec, built once, and how one request is made and counted."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.target = Target.from_url(spec.url)
        headers = dict(TIMING_HEADER)
        if spec.auth_key:
            headers["Authorization"] = f"Bearer {spec.auth_key}"
        self.headers = headers
        path = "/invoke?mode=async" if spec.mode == "async" else "/invoke"
        self.invoke = build_request(self.target, "POST", path, spec.body, headers)

    async def connect(self) -> Connection:
        return await Connection.open(self.target, self.spec.timeout_s)

    async def one(
        self, conn: Connection, tally: Tally, phase: Phase, due: float | None = None
    ) -> None:
        """Send one request (a job and its stream, in async mode) and count how it went.
        Its latency counts from when it was ``due`` (open loop), or else from when it was
        sent, to when its answer (the job's last event) was whole."""
        answer = await self.answer(conn, conn.request(self.invoke, self.spec.timeout_s), tally)
        if answer is None:
            return
        since = answer.sent if due is None else due
        if self.spec.mode == "async" and answer.status == 202:
            answer = await self.answer(conn, self._follow(conn, answer), tally)
            if answer is None:
                return
        self.count(answer, since, tally, phase)

    @staticmethod
    async def answer(conn: Connection, pending: Awaitable[Answer], tally: Tally) -> Answer | None:
        """The answer, or None once why there is none is counted (the connection is closed)."""
        try:
            return await pending
        except TimeoutError:
            tally.errors["timeout"] += 1
        except (ConnectionError, OSError):
            tally.errors["connection"] += 1
        conn.close()
        return None

    def count(self, answer: Answer, since: float, tally: Tally, phase: Phase) -> None:
        """Count an answer; its latency runs from ``since`` to when it was whole."""
        took = answer.done - since
        status = answer.status
        if status in ABORT_STATUSES and tally.refused is None:
            tally.refused = (status, answer.body.decode("utf-8", "replace"))
            phase.stopped = True
        if status >= 400:
            tally.statuses[status] += 1
            tally.errors[f"http {status}"] += 1
        elif self.spec.mode == "async" and b"event: job.completed" not in answer.body:
            tally.errors["job not completed"] += 1
        else:
            tally.ok += 1
            tally.latency.record(took)
            if answer.first_event is not None:
                tally.first_event.record(answer.first_event - since)
            if answer.timing:
                _server_time(answer.timing, tally)

    async def _follow(self, conn: Connection, accepted: Answer) -> Answer:
        job_id = json.loads(accepted.body)["job_id"]
        stream = build_request(self.target, "GET", f"/stream/{job_id}", headers=self.headers)
        return await conn.request(stream, self.spec.timeout_s)


def _server_time(header: bytes, tally: Tally) -> None:
    """``engine;dur=1.2, step.fetch;dur=0.4``: the engine's time, and each step's."""
    for part in header.decode("latin-1").split(","):
        name, _, dur = part.strip().partition(";dur=")
        try:
            ms = float(dur)
        except ValueError:
            continue
        if name == "engine":
            tally.engine.record(ms / 1000)
        elif name.startswith("step."):
            tally.step_ms[name[5:]] = tally.step_ms.get(name[5:], 0.0) + ms


async def run_phase(
    client: Client,
    conns: list[Connection],
    phase: Phase,
    rate: float | None,
    on_tick: Callable[[Tally], None] | None = None,
) -> Tally:
    """Run until the phase is over (or stopped); every connection is used."""
    tally = Tally()
    workers: list[Coroutine[Any, Any, None]]
    cpu, start = time.process_time(), time.perf_counter()
    if rate is None:
        workers = [_closed(client, conns, i, tally, phase) for i in range(len(conns))]
    else:
        due: asyncio.Queue[float | None] = asyncio.Queue()
        workers = [_open(client, conns, i, tally, phase, due) for i in range(len(conns))]
        workers.append(_schedule(phase, rate, due, len(conns)))
    ticker = asyncio.ensure_future(_tick(tally, on_tick)) if on_tick is not None else None
    try:
        await asyncio.gather(*workers)
    except asyncio.CancelledError:
        tally.interrupted = True
    finally:
        if ticker is not None:
            ticker.cancel()
    tally.elapsed_s = time.perf_counter() - start
    tally.cpu_s = time.process_time() - cpu
    return tally


async def _tick(tally: Tally, on_tick: Callable[[Tally], None]) -> None:
    while True:
        await asyncio.sleep(0.25)
        on_tick(tally)


async def _ready(
    client: Client, conns: list[Connection], i: int, tally: Tally
) -> Connection | None:
    """Connection ``i``, opened again if the server closed it; None (counted) if it cannot be."""
    if conns[i].closed:
        try:
            conns[i] = await client.connect()
        except (OSError, TimeoutError):
            tally.errors["connection"] += 1
            return None
    return conns[i]


async def _closed(
    client: Client, conns: list[Connection], i: int, tally: Tally, phase: Phase
) -> None:
    if client.spec.mode == "async":
        await _closed_jobs(client, conns, i, tally, phase)
        return
    # The next request goes out as soon as an answer is whole, and the answer is counted
    # while the server works on the next: the client's own turnaround stays as short as
    # wrk's, and never sits between a server and its next request.
    previous: Answer | None = None
    while phase.take():
        if (conn := await _ready(client, conns, i, tally)) is None:
            await asyncio.sleep(0.01)
            continue
        waiter = conn.send(client.invoke, client.spec.timeout_s)
        if previous is not None:
            client.count(previous, previous.sent, tally, phase)
        previous = await client.answer(conn, waiter, tally)
    if previous is not None:
        client.count(previous, previous.sent, tally, phase)


async def _closed_jobs(
    client: Client, conns: list[Connection], i: int, tally: Tally, phase: Phase
) -> None:
    while phase.take():
        if (conn := await _ready(client, conns, i, tally)) is None:
            await asyncio.sleep(0.01)
            continue
        await client.one(conn, tally, phase)


async def _schedule(phase: Phase, rate: float, due: asyncio.Queue[float | None], n: int) -> None:
    """Put each request's due time in the queue at that time."""
    start = time.perf_counter()
    sent = 0
    while phase.take():
        when = start + sent / rate
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(when)
        sent += 1
    for _ in range(n):
        due.put_nowait(None)  # no more: each connection stops after what is queued


async def _open(
    client: Client,
    conns: list[Connection],
    i: int,
    tally: Tally,
    phase: Phase,
    due: asyncio.Queue[float | None],
) -> None:
    while (when := await due.get()) is not None:
        if phase.stopped and tally.refused is not None:
            continue
        if (conn := await _ready(client, conns, i, tally)) is not None:
            await client.one(conn, tally, phase, when)


async def run_spec(
    spec: LoadSpec,
    before_measure: Callable[[], None] | None = None,
    on_tick: Callable[[Tally], None] | None = None,
) -> Tally:
    """Connect, warm up (not counted), then measure; ``before_measure`` is called in between
    (client processes wait for each other there)."""
    client = Client(spec)
    conns = [await client.connect() for _ in range(spec.concurrency)]
    try:
        if spec.warmup_requests or spec.warmup_s:
            phase = Phase(spec.warmup_requests or None, spec.warmup_s or None)
            warm = await run_phase(client, conns, phase, spec.rate)
            if warm.refused is not None or warm.interrupted:
                return warm
        if before_measure is not None:
            await asyncio.get_running_loop().run_in_executor(None, before_measure)
        phase = Phase(spec.requests, spec.duration_s)
        return await run_phase(client, conns, phase, spec.rate, on_tick)
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
