"""The broker shared by many hosts: one Redis server (``ZSERVE_BROKER_URL=redis://...``).

A job is a hash, its events a stream whose entry ids are the events' seqs (``<seq>-0``), and
every change that must be atomic (create, publish, the finishing compare-and-set with its
terminal event, a cancel request, pruning) is one Lua script (``redis_scripts``). Commands go
through one connection pool with a socket timeout; ``wait`` blocks in ``XREAD BLOCK`` on a pool
of its own, so a blocked reader never holds a connection that commands need. A Redis that does
not answer makes every call raise ``BrokerUnavailable`` (not lasting) and ``problem`` say so,
until a call succeeds again.

Imported only by ``open_broker`` for a ``redis://`` or ``rediss://`` URL: the ``redis`` package
is an optional extra (``zserve[redis]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from zserve.broker import redis_scripts as lua
from zserve.broker.base import Broker, IdempotencyKey, KeyHeld
from zserve.errors import BrokerUnavailable
from zserve.events import TERMINAL, Event
from zserve.records import FINISHED, JobRecord, JobStatus

__all__ = ["RedisBroker", "split_url"]

logger = logging.getLogger("zserve.jobs")

#: Seconds a command may take before the broker counts Redis as unreachable.
COMMAND_TIMEOUT_S = 5.0
#: ``wait`` blocks in slices of at most this long (its socket timeout is a few seconds more).
BLOCK_SLICE_S = 10.0
#: Job ids a listing reads from an index at a time.
PAGE = 200
#: Job ids one prune script deletes at a time.
PRUNE_BATCH = 500

FIELDS = frozenset(f.name for f in fields(JobRecord))
SUMMARY_FIELDS = sorted(FIELDS - {"outputs"})
DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
#: Errors of a Redis that answers but cannot take writes for now (out of memory under
#: ``noeviction``, a read-only replica, a failed snapshot): like a full disk for SQLite.
REFUSED = ("OOM", "READONLY", "MISCONF")


def split_url(url: str) -> tuple[str, str]:
    """(the URL for the redis client, the key prefix): ``?prefix=NAME:`` picks a namespace of
    its own, so that several services share one Redis; ``zserve:`` otherwise."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "zserve:")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def _dump(value: Any) -> str:
    return json.dumps(value, default=repr, separators=(",", ":"))


def _encode(event: Event) -> str:
    return _dump({"t": event.type, "ts": event.ts, "s": event.step, "d": event.data})


def _decode(job_id: str, entries: Any) -> list[Event]:
    """Stream entries ``(id, {"e": JSON})``, as XRANGE and XREAD give them, as events."""
    found = []
    for entry_id, body in entries:
        doc = json.loads(body["e"])
        seq = int(entry_id.split("-")[0])
        found.append(Event(doc["t"], job_id, doc["ts"], doc["s"], doc["d"], seq))
    return found


def _record(values: dict[str, str]) -> JobRecord:
    return JobRecord.from_row({k: json.loads(v) for k, v in values.items() if k in FIELDS})


def _field_args(changes: dict[str, Any], *, creating: bool = False) -> list[str]:
    """``n, field, JSON, field, JSON...``: the arguments the scripts take fields in."""
    unknown = set(changes) - FIELDS
    if unknown or ("job_id" in changes and not creating):
        raise ValueError(f"Not a changeable job field: {sorted(unknown or {'job_id'})}")
    return [str(len(changes))] + [a for k, v in changes.items() for a in (k, _dump(v))]


@dataclass(slots=True)
class _Owned:
    """A job this worker created and runs: its fencing token, how many of its events it knows
    written (so that a write retried after its answer was lost appends nothing twice), and the
    lock that keeps its writes one at a time (so that count stays true)."""

    fence: int = 1
    own: int = 1
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RedisBroker(Broker):
    kind = "redis"
    shared = True
    multi_host = True

    def __init__(self, url: str, *, job_ttl_s: float | None = None) -> None:
        client_url, self.prefix = split_url(url)
        parts = urlsplit(client_url)
        #: where, for messages (never the password)
        self.where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
        self.job_ttl_s = job_ttl_s
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1)
        common: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": 5.0,
                                  "retry": retry, "health_check_interval": 30}  # fmt: skip
        self._redis = aioredis.from_url(client_url, socket_timeout=COMMAND_TIMEOUT_S, **common)
        self._blocking = aioredis.from_url(
            client_url, socket_timeout=BLOCK_SLICE_S + COMMAND_TIMEOUT_S, **common
        )
        self._create = self._redis.register_script(lua.CREATE)
        self._publish = self._redis.register_script(lua.PUBLISH)
        self._finish = self._redis.register_script(lua.FINISH)
        self._cancel = self._redis.register_script(lua.CANCEL)
        self._prune = self._redis.register_script(lua.PRUNE)
        self._reap = self._redis.register_script(lua.REAP)
        #: the jobs this worker created and still owns
        self._owned: dict[str, _Owned] = {}
        #: why Redis cannot be used just now, or None
        self.down: str | None = None

    # -- keys and errors ------------------------------------------------------------------------

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _stream(self, job_id: str) -> str:
        return f"{self.prefix}ev:{job_id}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def problem(self) -> str | None:
        return self.down

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Redis unreachable or too slow: BrokerUnavailable (for now), and ``problem`` says
        so until a call succeeds."""
        try:
            yield
        except ResponseError as exc:
            if not str(exc).startswith(REFUSED):
                raise
            self._unusable(exc)
        except DOWN as exc:
            self._unusable(exc)
        if self.down is not None:
            self.down = None
            logger.warning("The job broker (Redis at %s) answers again", self.where)

    def _unusable(self, exc: Exception) -> NoReturn:
        if self.down is None:
            logger.error("The job broker (Redis at %s) cannot be used: %s", self.where, exc)
        self.down = (
            f"The job broker (Redis at {self.where}) is unreachable or refuses writes: {exc}. "
            "Async and streamed jobs are refused until it answers"
        )
        self.failed_at = time.monotonic()
        raise BrokerUnavailable(self.down, lasting=False) from None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check that Redis answers; a worker starts without it all the same (sync invokes
        never touch the broker), with ``problem`` saying why async jobs are refused."""
        try:
            async with self._guard():
                await self._redis.ping()
        except BrokerUnavailable:
            pass

    async def close(self) -> None:
        self._owned.clear()
        await self._redis.aclose()
        await self._blocking.aclose()

    # -- writes ---------------------------------------------------------------------------------

    async def create(
        self, job: JobRecord, first: Event, idempotency: IdempotencyKey | None = None
    ) -> Event:
        row = job.to_row()
        created = repr(float(job.created_at))
        fields = _field_args(row, creating=True)
        keys = [self._job(job.job_id), self._stream(job.job_id)]
        if idempotency is not None:  # the key, and fields the scripts find it by (not JSON)
            keys.append(self._key(f"idem:{idempotency.key}"))
            fields = [str(int(fields[0]) + 2), *fields[1:], ":idem", idempotency.key,
                      ":fp", idempotency.fingerprint]  # fmt: skip
        args = [self.prefix, job.job_id, created, *fields]
        try:
            async with self._guard():
                done = await self._create(keys=keys, args=[*args, _encode(first)])
        except ResponseError as exc:
            if "job exists" in str(exc):
                raise ValueError(f"Job {job.job_id} exists already") from None
            raise
        if isinstance(done, list):  # [job id, fingerprint] of the job that holds the key
            raise KeyHeld(str(done[0]), str(done[1]))
        self._owned[job.job_id] = _Owned()
        return first.with_seq(1)

    async def publish(
        self, job_id: str, events: Sequence[Event], changes: dict[str, Any] | None = None
    ) -> list[Event]:
        if any(e.terminal for e in events):
            raise ValueError("publish() takes non-terminal events; a job is ended by finish()")
        changes = changes or {}
        if changes.get("status") in FINISHED:
            raise ValueError("A job is ended by finish(), not by publishing a finished status")
        owned = self._owned.get(job_id)
        async with owned.lock if owned is not None else contextlib.nullcontext():
            fence, own = ("", "") if owned is None else (str(owned.fence), str(owned.own))
            args = [self.prefix, job_id, fence, own, *_field_args(changes),
                    *map(_encode, events)]  # fmt: skip
            async with self._guard():
                first = await self._publish(
                    keys=[self._job(job_id), self._stream(job_id)], args=args
                )
            if first < 0:
                self._disown(job_id, first)
                return []
            if owned is not None:
                owned.own += len(events)
        return [e.with_seq(first + i) for i, e in enumerate(events)]

    def _disown(self, job_id: str, code: int) -> None:
        """The job ended, or (-2) was taken from this worker: its writes are refused now."""
        if self._owned.pop(job_id, None) is not None and code == -2:
            logger.warning("Job %s was taken from this worker (its lease ran out): its "
                           "further events and its end are refused", job_id)  # fmt: skip

    async def finish(self, job_id: str, terminal: Event, changes: dict[str, Any]) -> Event | None:
        if terminal.type not in TERMINAL:
            raise ValueError(f"{terminal.type!r} is not a terminal event")
        changes = {**changes, "status": TERMINAL[terminal.type]}
        owned = self._owned.get(job_id)
        async with owned.lock if owned is not None else contextlib.nullcontext():
            fence = "" if owned is None else str(owned.fence)
            args = [self.prefix, job_id, fence, self._ttl_ms(), *_field_args(changes),
                    _encode(terminal)]  # fmt: skip
            async with self._guard():
                seq = await self._finish(keys=[self._job(job_id), self._stream(job_id)], args=args)
            self._disown(job_id, seq)
        return None if seq < 0 else terminal.with_seq(seq)

    async def reap(
        self, job: JobRecord, terminal: Event, changes: dict[str, Any], now: float
    ) -> Event | None:
        """One script checks that the owner's lease is still out and raises the job's fence:
        an owner that renewed its lease in the meantime keeps its job, and one that comes back
        later cannot write to it."""
        if terminal.type not in TERMINAL:
            raise ValueError(f"{terminal.type!r} is not a terminal event")
        changes = {**changes, "status": TERMINAL[terminal.type]}
        args = [self.prefix, job.job_id, _dump(job.worker), repr(float(now)), self._ttl_ms(),
                *_field_args(changes), _encode(terminal)]  # fmt: skip
        async with self._guard():
            seq = await self._reap(keys=[self._job(job.job_id), self._stream(job.job_id)],
                                   args=args)  # fmt: skip
        return None if seq < 0 else terminal.with_seq(seq)

    def _ttl_ms(self) -> str:
        return str(0 if self.job_ttl_s is None else max(1, int(self.job_ttl_s * 1000)))

    async def request_cancel(self, job_id: str) -> None:
        async with self._guard():
            await self._cancel(
                keys=[self._job(job_id), self._stream(job_id)], args=[self.prefix, job_id]
            )

    async def heartbeat(self, worker: str, ttl: float) -> None:
        now = time.time()
        async with self._guard(), self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._key("leases"), {worker: now + ttl})
            # leases long run out tell nothing a missing lease does not
            pipe.zremrangebyscore(self._key("leases"), "-inf", now - 86400)
            await pipe.execute()

    async def prune(self, before: float, keep: int) -> int:
        finished = self._key("finished")
        async with self._guard():
            old = await self._redis.zrangebyscore(finished, "-inf", f"({before!r}")
            extra = await self._redis.zrevrange(finished, max(0, keep), -1)
            doomed = list(dict.fromkeys([*old, *extra]))
            dropped = 0
            for i in range(0, len(doomed), PRUNE_BATCH):
                batch = doomed[i : i + PRUNE_BATCH]
                dropped += await self._prune(keys=[], args=[self.prefix, *batch])
        return dropped

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord | None:
        async with self._guard():
            values: Any = await self._redis.hgetall(self._job(job_id))
        return _record(values) if values else None

    async def _summaries(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self._job(job_id), SUMMARY_FIELDS)
            rows = await pipe.execute()
        found: list[JobRecord | None] = []
        for row in rows:
            values = {k: v for k, v in zip(SUMMARY_FIELDS, row, strict=True) if v is not None}
            found.append(_record(values) if "job_id" in values else None)  # None: expired
        return found

    async def list_jobs(
        self,
        status: str | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
        *,
        prefix: str | None = None,
    ) -> list[JobRecord]:
        index = self._key("jobs" if status is None else f"status:{status}")
        top = "+inf" if before is None else repr(float(before[0]))
        found: list[JobRecord] = []
        offset = 0
        async with self._guard():
            while len(found) < limit:
                page: Any = await self._redis.zrevrangebyscore(
                    index, top, "-inf", start=offset, num=PAGE, withscores=True
                )
                if not page:
                    break
                offset += len(page)
                ids = [
                    job_id for job_id, score in page
                    if (before is None or (score, job_id) < before)
                    and (prefix is None or job_id.startswith(prefix))
                ]  # fmt: skip
                found += [r for r in await self._summaries(ids) if r is not None]
        return found[: max(0, limit)]

    async def count_by_status(self) -> dict[str, int]:
        async with self._guard(), self._redis.pipeline(transaction=False) as pipe:
            for status in JobStatus:
                pipe.zcard(self._key(f"status:{status.value}"))
            counts = await pipe.execute()
        return {s.value: n for s, n in zip(JobStatus, counts, strict=True) if n}

    async def events(self, job_id: str, after: int = 0) -> list[Event]:
        async with self._guard():
            entries = await self._redis.xrange(self._stream(job_id), f"{after + 1}-0", "+")
        return _decode(job_id, entries)

    async def wait(self, job_id: str, after: int, timeout: float) -> list[Event]:
        found = await self.events(job_id, after)
        if found:
            return found
        async with self._guard():
            if not await self._redis.exists(self._job(job_id)):
                return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stream = self._stream(job_id)
        while (left := deadline - loop.time()) > 0:
            block_ms = max(1, int(min(left, BLOCK_SLICE_S) * 1000))
            async with self._guard():
                got: Any = await self._blocking.xread({stream: f"{after}-0"}, block=block_ms)
            if got:  # RESP2: [[stream, entries]]; RESP3: {stream: [entries]}
                entries = next(iter(got.values())) if isinstance(got, dict) else got[0][1]
                return _decode(job_id, entries)
        return []

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        ids = list(job_ids)
        if not ids:
            return set()
        async with self._guard():
            flags = await self._redis.smismember(self._key("cancels"), ids)
        return {job_id for job_id, flag in zip(ids, flags, strict=True) if flag}

    async def expired(self, now: float) -> list[JobRecord]:
        async with self._guard():
            owners: Any = await self._redis.hgetall(self._key("owners"))
            if not owners:
                return []
            workers = sorted(set(owners.values()))
            until = await self._redis.zmscore(self._key("leases"), workers)
            dead = {w for w, t in zip(workers, until, strict=True) if t is None or t < now}
            records = [await self.get(j) for j, w in owners.items() if w in dead]
        lost = [r for r in records if r is not None and not r.finished and r.worker in dead]
        return sorted(lost, key=lambda r: (r.created_at, r.job_id))
