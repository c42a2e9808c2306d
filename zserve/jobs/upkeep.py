"""The background chores of one worker's jobs: pruning finished jobs, and, when the broker is
shared with other workers, a heartbeat (the lease on the jobs it runs), watching for cancel
requests made on other workers, and ending the jobs of workers whose lease ran out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection

from zserve.broker.base import Broker
from zserve.errors import BrokerUnavailable
from zserve.jobs.local import LocalJobs
from zserve.jobs.outcome import WORKER_LOST, Outcome, terminal

__all__ = ["HEARTBEAT_S", "LEASE_TTL_S", "POLL_S", "Upkeep"]

logger = logging.getLogger("zserve.jobs")

#: Seconds between looks for cancel requests.
POLL_S = 0.1
#: A worker's lease lasts this long; it is renewed every HEARTBEAT_S.
LEASE_TTL_S = 3.0
HEARTBEAT_S = 1.0


class Upkeep:
    def __init__(
        self,
        broker: Broker,
        worker_id: str,
        local: LocalJobs,
        *,
        retention_s: float,
        retention_count: int,
        running: Callable[[], Collection[str]],
        cancel: Callable[[str], None],
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.broker = broker
        self.worker_id = worker_id
        self.local = local
        self.retention_s = retention_s
        self.retention_count = retention_count
        #: the ids of the broker jobs this worker runs, and how to cancel one of them
        self.running = running
        self.cancel = cancel
        #: called once a lease period, while the broker answers (``JobManager._settle``)
        self.settle = settle
        self._chores: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._chores.append(asyncio.ensure_future(self._prune_loop()))
        if self.broker.shared:
            # a lost broker (its file deleted under the server) does not stop a worker from
            # starting: it serves sync invokes and refuses the rest, like the other workers
            with contextlib.suppress(BrokerUnavailable):
                await self.broker.heartbeat(self.worker_id, LEASE_TTL_S)
            self._chores.append(asyncio.ensure_future(self._cancel_loop()))
            self._chores.append(asyncio.ensure_future(self._lease_loop()))

    async def stop(self) -> None:
        for chore in self._chores:
            chore.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
        self._chores.clear()

    async def _cancel_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                running = list(self.running())
                if running:
                    for job_id in await self.broker.cancel_requested(running):
                        self.cancel(job_id)
            except Exception as exc:
                _failed("Checking cancel requests failed", exc)

    async def _lease_loop(self) -> None:
        """Renew this worker's lease; end the jobs of workers whose lease ran out, but only
        once this worker's own writes have succeeded for a whole lease period: after the broker
        could not be written (a full disk), other live workers need that long to renew theirs."""
        writing_since: float | None = None
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.broker.heartbeat(self.worker_id, LEASE_TTL_S)
            except Exception as exc:
                writing_since = None
                _failed("Lease upkeep failed", exc)
                continue
            if self.settle is not None:
                try:
                    await self.settle()
                except Exception as exc:
                    _failed("Settling unsure submits failed", exc)
            now = time.monotonic()
            writing_since = writing_since or now
            if now - max(writing_since, self.broker.failed_at) < LEASE_TTL_S:
                continue
            try:
                now = time.time()
                for job in await self.broker.expired(now):
                    event, changes = terminal(job, Outcome.failed(WORKER_LOST))
                    if await self.broker.reap(job, event, changes, now) is not None:
                        logger.warning("Job %s failed: its worker %s was lost", job.job_id,
                                       job.worker)  # fmt: skip
            except Exception as exc:
                _failed("Lease upkeep failed", exc)

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.retention_s / 2))
            before = time.time() - self.retention_s
            self.local.prune(before)
            try:
                await self.broker.prune(before, self.retention_count)
            except Exception as exc:
                _failed("Pruning finished jobs failed", exc)


def _failed(what: str, exc: Exception) -> None:
    """A chore that failed: the traceback, unless the broker is known to be unusable (it said
    why once, and every request says so too)."""
    if not isinstance(exc, BrokerUnavailable):
        logger.error("%s", what, exc_info=exc)
