"""The broker shared by many hosts: one Redis server (``ZSERVE_BROKER_URL=redis://...``).

A job is a hash, its events a stream whose entry ids are the events' seqs (``<seq>-0``), and
every change that must be atomic (create, publish, the finishing compare-and-set with its
terminal event, a cancel request, pruning) is one Lua script (``redis_scripts``). Commands go
through one bounded connection pool with a socket timeout; every ``wait`` of a worker is served by
one tailer, and cancel requests for its jobs come by pub/sub, each on one connection of its own
(``redis_tail``), so a blocked reader never holds a connection that commands need. A Redis that does
not answer makes every call raise ``BrokerUnavailable`` (not lasting) and ``problem`` say so,
until a call succeeds again.

Imported only by ``open_broker`` for a ``redis://`` or ``rediss://`` URL: the ``redis`` package
is an optional extra (``zserve[redis]``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ResponseError

from zserve.broker import redis_scripts as lua
from zserve.broker.base import Broker, IdempotencyKey, KeyHeld
from zserve.broker.redis_rows import (
    SUMMARY_FIELDS,
    Owned,
    decode,
    dump,
    encode,
    field_args,
    record_of,
    split_url,
)
from zserve.broker.redis_tail import BLOCK_SLICE_S, DOWN, Tailer, listen
from zserve.errors import BrokerUnavailable
from zserve.events import TERMINAL, Event
from zserve.records import FINISHED, JobRecord, JobStatus

__all__ = ["RedisBroker", "split_url"]

logger = logging.getLogger("zserve.jobs")

#: Seconds a command may take before the broker counts Redis as unreachable.
COMMAND_TIMEOUT_S = 5.0
#: Connections the command pool opens at most (a command waits for a free one up to the
#: command timeout): many stream clients never mean as many connections.
COMMAND_CONNECTIONS = 16
#: Job ids a listing reads from an index at a time.
PAGE = 200
#: Job ids one prune script deletes at a time.
PRUNE_BATCH = 500

#: Errors of a Redis that answers but cannot take writes for now (out of memory under
#: ``noeviction``, a read-only replica, a failed snapshot): like a full disk for SQLite.
REFUSED = ("OOM", "READONLY", "MISCONF")


class RedisBroker(Broker):
    kind = "redis"
    shared = True
    multi_host = True
    #: cancel requests come by pub/sub (``cancel_wakeups``): the poll is a fallback, once a
    #: heartbeat (upkeep's ``HEARTBEAT_S``)
    cancel_poll_s = 1.0

    def __init__(self, url: str, *, job_ttl_s: float | None = None) -> None:
        client_url, self.prefix = split_url(url)
        parts = urlsplit(client_url)
        #: where, for messages (never the password)
        self.where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
        self.job_ttl_s = job_ttl_s
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), 1)
        common: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": 5.0,
                                  "retry": retry, "health_check_interval": 30}  # fmt: skip
        pool = aioredis.BlockingConnectionPool.from_url(
            client_url, max_connections=COMMAND_CONNECTIONS, timeout=COMMAND_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S, **common,
        )  # fmt: skip
        self._redis = aioredis.Redis.from_pool(pool)
        self._client_url, self._options = client_url, common
        #: serves every ``wait`` (one blocking connection)
        self.tailer = Tailer(
            client_url, self._redis, socket_timeout=BLOCK_SLICE_S + COMMAND_TIMEOUT_S, **common
        )
        self._create = self._redis.register_script(lua.CREATE)
        self._publish = self._redis.register_script(lua.PUBLISH)
        self._finish = self._redis.register_script(lua.FINISH)
        self._cancel = self._redis.register_script(lua.CANCEL)
        self._prune = self._redis.register_script(lua.PRUNE)
        self._reap = self._redis.register_script(lua.REAP)
        #: the jobs this worker created and still owns
        self._owned: dict[str, Owned] = {}
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
        await self.tailer.close()
        await self._redis.aclose()

    # -- writes ---------------------------------------------------------------------------------

    async def create(
        self, job: JobRecord, first: Event, idempotency: IdempotencyKey | None = None
    ) -> Event:
        row = job.to_row()
        created = repr(float(job.created_at))
        fields = field_args(row, creating=True)
        keys = [self._job(job.job_id), self._stream(job.job_id)]
        if idempotency is not None:  # the key, and fields the scripts find it by (not JSON)
            keys.append(self._key(f"idem:{idempotency.key}"))
            fields = [str(int(fields[0]) + 2), *fields[1:], ":idem", idempotency.key,
                      ":fp", idempotency.fingerprint]  # fmt: skip
        args = [self.prefix, job.job_id, created, *fields]
        try:
            async with self._guard():
                done = await self._create(keys=keys, args=[*args, encode(first)])
        except ResponseError as exc:
            if "job exists" in str(exc):
                raise ValueError(f"Job {job.job_id} exists already") from None
            raise
        if isinstance(done, list):  # [job id, fingerprint] of the job that holds the key
            raise KeyHeld(str(done[0]), str(done[1]))
        self._owned[job.job_id] = Owned()
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
            args = [self.prefix, job_id, fence, own, *field_args(changes),
                    *map(encode, events)]  # fmt: skip
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
            args = [self.prefix, job_id, fence, self._ttl_ms(), *field_args(changes),
                    encode(terminal)]  # fmt: skip
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
        args = [self.prefix, job.job_id, dump(job.worker), repr(float(now)), self._ttl_ms(),
                *field_args(changes), encode(terminal)]  # fmt: skip
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

    async def cancel_wakeups(self, worker: str, wake: Callable[[str], None]) -> None:
        """The CANCEL script publishes the job id on ``cancel:<owner>``: subscribed on a
        connection of its own, made again (with the subscription) after Redis comes back."""
        channel = self._key(f"cancel:{worker}")
        await listen(
            self._client_url, channel, wake, socket_timeout=COMMAND_TIMEOUT_S, **self._options
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
        return record_of(values) if values else None

    async def _summaries(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hmget(self._job(job_id), SUMMARY_FIELDS)
            rows = await pipe.execute()
        found: list[JobRecord | None] = []
        for row in rows:
            values = {k: v for k, v in zip(SUMMARY_FIELDS, row, strict=True) if v is not None}
            found.append(record_of(values) if "job_id" in values else None)  # None: expired
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
        return decode(job_id, entries)

    async def wait(self, job_id: str, after: int, timeout: float) -> list[Event]:
        stream = self._stream(job_id)
        async with self._guard():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xrange(stream, f"{after + 1}-0", "+")
                pipe.exists(self._job(job_id))
                entries, known = await pipe.execute()
            if not entries and known:
                entries = await self.tailer.wait(stream, after, timeout)
        return decode(job_id, entries)

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
