"""The broker contract: where the jobs of async, streamed and WebSocket invocations live, so
that any worker of a server can answer for any job.

One worker owns a job while it runs it (``zserve.records.JobRecord.worker``) and publishes its
events; any worker may read jobs and events, ask for a cancel, or end a job whose owner died.
The broker assigns each event its ``seq`` (1, 2, 3, ... per job), and ends a job exactly once:
``finish`` is a compare-and-set from queued/running, and writes the terminal event in the same step.

A job may be created under an idempotency key (``IdempotencyKey``): ``create`` then makes it only
if no job the broker still has holds that key, in the same atomic step, so that one key starts one
job whichever workers or hosts submit it at the same moment; else it raises ``KeyHeld`` naming the
job that holds it. A key lives as long as its job: pruning (or expiry) forgets both.

All methods are coroutines called on the worker's event loop; an implementation that blocks
(SQLite) does its I/O on a thread of its own.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zserve.events import Event
from zserve.records import JobRecord

__all__ = ["Broker", "IdempotencyKey", "KeyHeld"]


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key for one job (``Idempotency-Key``), and a fingerprint of the request that
    came with it: a repeat with the same key must be the same request."""

    key: str
    fingerprint: str


class KeyHeld(Exception):
    """``create``: a job the broker still has holds the idempotency key; nothing was written."""

    def __init__(self, job_id: str, fingerprint: str) -> None:
        super().__init__(f"The idempotency key is held by job {job_id}")
        #: the job that holds the key, and the fingerprint of the request that created it
        self.job_id = job_id
        self.fingerprint = fingerprint


class Broker(abc.ABC):
    #: "memory" or "sqlite" (shown by /status)
    kind: str = ""
    #: Whether other processes see the same jobs: then a job's owner keeps a lease (heartbeat),
    #: watches for cancel requests from other workers, and ends jobs whose owner died.
    shared: bool = False
    #: Whether the workers of other hosts see the same jobs (Redis): a draining host's stream
    #: clients then resume on another host (SQLite is ``shared`` by one host's workers only).
    multi_host: bool = False
    #: ``time.monotonic()`` of the last write that failed for want of storage (a full disk).
    failed_at: float = float("-inf")

    @property
    def problem(self) -> str | None:
        """Why the broker cannot be used or written just now (shown by /health and /status)."""
        return None

    async def start(self) -> None:  # noqa: B027 (an optional hook)
        """Open connections; called once per worker before any other method."""

    async def close(self) -> None:  # noqa: B027 (an optional hook)
        """Release everything; called once per worker at shutdown."""

    @abc.abstractmethod
    async def create(
        self, job: JobRecord, first: Event, idempotency: IdempotencyKey | None = None
    ) -> Event:
        """Store a new job and its first event (``job.queued``); return the event with seq 1.
        With ``idempotency``: only if no job the broker still has holds its key (checked and
        claimed atomically, across every process that shares the broker), else ``KeyHeld``
        names that job and nothing is written. The key is forgotten with its job."""

    @abc.abstractmethod
    async def publish(
        self, job_id: str, events: Sequence[Event], changes: dict[str, Any] | None = None
    ) -> list[Event]:
        """Append non-terminal events (seq assigned in order) and apply ``changes`` to the job's
        fields (e.g. ``status``, ``started_at``, ``steps``, ``worker``) in one step. Does nothing
        and returns [] when the job has already finished."""

    @abc.abstractmethod
    async def finish(self, job_id: str, terminal: Event, changes: dict[str, Any]) -> Event | None:
        """End the job: only if it is still queued or running, set its status from the terminal
        event's type (``events.TERMINAL``), apply ``changes`` (``finished_at``, ``outputs``,
        ``error``, ``steps``) and append ``terminal``, all at once. Returns the terminal event
        with its seq, or None when the job had already finished (nothing is written)."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    async def list_jobs(
        self,
        status: str | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
        *,
        prefix: str | None = None,
    ) -> list[JobRecord]:
        """Summaries (no ``outputs``) newest first, by (``created_at``, ``job_id``); with
        ``before``, only the jobs that come after it in that order (strictly older); with
        ``prefix``, only the jobs whose id starts with it."""

    @abc.abstractmethod
    async def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each state (states with none may be left out)."""

    @abc.abstractmethod
    async def events(self, job_id: str, after: int = 0) -> list[Event]:
        """The job's events with ``seq > after``, in order."""

    @abc.abstractmethod
    async def wait(self, job_id: str, after: int, timeout: float) -> list[Event]:
        """Like ``events``, but waits up to ``timeout`` seconds for at least one."""

    @abc.abstractmethod
    async def request_cancel(self, job_id: str) -> None:
        """Ask the job's owner to cancel it (it may run on another worker)."""

    @abc.abstractmethod
    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs have a cancel request."""

    @abc.abstractmethod
    async def heartbeat(self, worker: str, ttl: float) -> None:
        """``worker`` is alive for ``ttl`` more seconds: its jobs keep their lease."""

    @abc.abstractmethod
    async def expired(self, now: float) -> list[JobRecord]:
        """Unfinished jobs owned by a worker whose lease ran out before ``now``."""

    async def reap(
        self, job: JobRecord, terminal: Event, changes: dict[str, Any], now: float
    ) -> Event | None:
        """End ``job`` (one ``expired(now)`` found) as ``finish`` does, but only if it is still
        unfinished and still owned by ``job.worker``, and that worker's lease still ran out
        before ``now``; from then on its owner can no longer write to it. Returns the terminal
        event, or None when nothing was written. Brokers shared by many hosts do all of it in
        one step; this default, for the workers of one host, re-reads the job first."""
        current = await self.get(job.job_id)
        if current is None or current.finished or current.worker != job.worker:
            return None
        return await self.finish(job.job_id, terminal, changes)

    @abc.abstractmethod
    async def prune(self, before: float, keep: int) -> int:
        """Forget finished jobs that finished before ``before``, and the oldest finished jobs
        beyond ``keep``, with their events; return how many were dropped."""
