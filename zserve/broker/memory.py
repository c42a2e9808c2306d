"""The broker of a single worker: plain dicts, nothing written anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from zserve.broker.base import Broker, IdempotencyKey, KeyHeld
from zserve.events import TERMINAL, Event
from zserve.records import JobRecord

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    kind = "memory"

    def __init__(self) -> None:
        self._jobs: dict[str, JobRecord] = {}
        self._events: dict[str, list[Event]] = {}
        self._cancel: set[str] = set()
        self._leases: dict[str, float] = {}
        self._changed: dict[str, asyncio.Event] = {}
        #: idempotency key -> (its job, the request's fingerprint); job -> its key
        self._keys: dict[str, tuple[str, str]] = {}
        self._key_of: dict[str, str] = {}

    def _append(self, job_id: str, event: Event) -> Event:
        log = self._events[job_id]
        placed = event.with_seq(len(log) + 1)
        log.append(placed)
        return placed

    def _notify(self, job_id: str) -> None:
        changed = self._changed.pop(job_id, None)
        if changed is not None:
            changed.set()

    async def create(
        self, job: JobRecord, first: Event, idempotency: IdempotencyKey | None = None
    ) -> Event:
        if idempotency is not None:  # no await before the job is stored: nothing interleaves
            held = self._keys.get(idempotency.key)
            if held is not None and held[0] in self._jobs:
                raise KeyHeld(*held)
            self._keys[idempotency.key] = (job.job_id, idempotency.fingerprint)
            self._key_of[job.job_id] = idempotency.key
        self._jobs[job.job_id] = copy.deepcopy(job)  # the caller keeps its own record
        self._events[job.job_id] = []
        placed = self._append(job.job_id, first)
        self._notify(job.job_id)
        return placed

    async def publish(
        self, job_id: str, events: Sequence[Event], changes: dict[str, Any] | None = None
    ) -> list[Event]:
        job = self._jobs.get(job_id)
        if job is None or job.finished:
            return []
        for name, value in (changes or {}).items():
            setattr(job, name, copy.deepcopy(value))
        placed = [self._append(job_id, e) for e in events]
        self._notify(job_id)
        return placed

    async def finish(self, job_id: str, terminal: Event, changes: dict[str, Any]) -> Event | None:
        job = self._jobs.get(job_id)
        if job is None or job.finished:
            return None
        for name, value in changes.items():
            setattr(job, name, copy.deepcopy(value))
        job.status = TERMINAL[terminal.type]
        placed = self._append(job_id, terminal)
        self._cancel.discard(job_id)
        self._notify(job_id)
        return placed

    async def get(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        return None if job is None else copy.deepcopy(job)

    async def list_jobs(
        self,
        status: str | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
        *,
        prefix: str | None = None,
    ) -> list[JobRecord]:
        jobs = (
            j
            for j in self._jobs.values()
            if (status is None or j.status == status)
            and (before is None or (j.created_at, j.job_id) < before)
            and (prefix is None or j.job_id.startswith(prefix))
        )
        newest = heapq.nlargest(limit, jobs, key=lambda j: (j.created_at, j.job_id))
        return [j.summary() for j in newest]

    async def count_by_status(self) -> dict[str, int]:
        return dict(Counter(j.status for j in self._jobs.values()))

    async def events(self, job_id: str, after: int = 0) -> list[Event]:
        return self._events.get(job_id, [])[after:]

    async def wait(self, job_id: str, after: int, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            found = await self.events(job_id, after)
            left = deadline - time.monotonic()
            if found or job_id not in self._jobs or left <= 0:
                return found
            changed = self._changed.setdefault(job_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    async def request_cancel(self, job_id: str) -> None:
        if job_id in self._jobs and not self._jobs[job_id].finished:
            self._cancel.add(job_id)

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        return self._cancel.intersection(job_ids)

    async def heartbeat(self, worker: str, ttl: float) -> None:
        self._leases[worker] = time.time() + ttl

    async def expired(self, now: float) -> list[JobRecord]:
        return [
            copy.deepcopy(j) for j in self._jobs.values()
            if not j.finished and j.worker and self._leases.get(j.worker, 0.0) < now
        ]  # fmt: skip

    async def prune(self, before: float, keep: int) -> int:
        finished = sorted(
            (j for j in self._jobs.values() if j.finished), key=lambda j: j.finished_at or 0
        )
        doomed = [j for j in finished if (j.finished_at or 0) < before]
        rest = [j for j in finished if (j.finished_at or 0) >= before]
        doomed += rest[: max(0, len(rest) - keep)]
        for job in doomed:
            del self._jobs[job.job_id]
            self._events.pop(job.job_id, None)
            key = self._key_of.pop(job.job_id, None)
            if key is not None and self._keys.get(key, ("",))[0] == job.job_id:
                del self._keys[key]
        return len(doomed)
