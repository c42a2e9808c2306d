"""``JobQueries``: the read side of a worker's jobs (one job, counts, pages of summaries, and
following a job's events), mixed into ``JobManager``. Sync jobs are this worker's
(``LocalJobs``); async and streamed ones are the broker's, so any worker answers for them."""

from __future__ import annotations

import asyncio
import heapq
import re
import time
from collections.abc import AsyncIterator

from zserve import events as ev
from zserve.broker.base import Broker
from zserve.errors import BrokerUnavailable, JobNotFound, NotFound
from zserve.jobs.local import LocalJobs
from zserve.jobs.upkeep import Upkeep
from zserve.records import JobRecord

__all__ = ["JOB_ID", "JobQueries", "unknown_job"]

#: What a job id looks like (``zserve.records.new_job_id``: a lower-case UUID).
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class JobQueries:
    broker: Broker
    _local: LocalJobs
    _upkeep: Upkeep

    async def get(self, job_id: str) -> JobRecord:
        record = self._local.get(job_id) or await self.broker.get(job_id)
        if record is None:
            raise unknown_job(job_id, self._upkeep.retention_s)
        return record

    async def after_cancel(self, job_id: str, seconds: float, poll_s: float) -> JobRecord:
        """The job once it has ended, or after ``seconds`` (looked at after 2 ms, then twice
        as long each time, up to ``poll_s``). Still unfinished while the broker
        cannot be written: BrokerUnavailable (503), as its end cannot be written yet."""
        deadline = time.monotonic() + seconds
        delay = min(poll_s, 0.002)  # the job usually ends within milliseconds: look soon
        while not (found := await self.get(job_id)).finished and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, poll_s)
        problem = self.broker.problem if found.mode != "sync" else None  # sync: no broker
        if not found.finished and problem is not None:
            raise BrokerUnavailable(f"{problem}. Job {job_id} ends then", lasting=False)
        return found

    async def count_by_status(self) -> dict[str, int]:
        """Jobs by state: this worker's sync jobs and all the broker's jobs."""
        counts = await self.broker.count_by_status()
        for job in self._local:
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    async def list_jobs(
        self,
        status: str | None,
        limit: int,
        before: tuple[float, str] | None = None,
        prefix: str | None = None,
    ) -> list[JobRecord]:
        """Summaries newest first (this worker's sync jobs and the broker's), after ``before``,
        of the ids that start with ``prefix``."""
        local = (
            j
            for j in self._local
            if (status is None or j.status == status)
            and (before is None or (j.created_at, j.job_id) < before)
            and (prefix is None or j.job_id.startswith(prefix))
        )
        shared = await self.broker.list_jobs(status, limit, before, prefix=prefix)
        newest = heapq.nlargest(limit, local, key=_newest)
        return [j.summary() for j in heapq.nlargest(limit, [*newest, *shared], key=_newest)]

    async def follow(
        self, job_id: str, after: int, wait_s: float
    ) -> AsyncIterator[ev.Event | None]:
        """A broker job's events after ``after``, as they come, up to the terminal one; ``None``
        when ``wait_s`` passes without an event (time for a keep-alive). Ends at once when the
        job has ended and nothing is left after ``after``."""
        job = await self.broker.get(job_id)
        if job is None or job.finished:  # everything is stored: no waiting
            for event in await self.broker.events(job_id, after):
                yield event
                if event.terminal:
                    return
            return
        while True:
            events = await self.broker.wait(job_id, after, wait_s)
            if not events:
                job = await self.broker.get(job_id)
                if job is None or job.finished:  # pruned, or nothing comes after `after`
                    return
                yield None
                continue
            for event in events:
                yield event
                after = event.seq
                if event.terminal:
                    return


def unknown_job(job_id: str, retention_s: float) -> NotFound:
    """The 404 of a job this server does not know: not a job id at all, or one it never had or
    has forgotten (it cannot tell those two apart)."""
    if not JOB_ID.match(job_id):
        return NotFound(
            f"No job {job_id!r}: that is not a job id (job ids are UUIDs such as "
            "0b7c2f9e-5d1a-4c3e-9f8b-2a6d4e1c7b90, as POST /invoke?mode=async answers)"
        )
    return JobNotFound.unknown(job_id, retention_s)


def _newest(job: JobRecord) -> tuple[float, str]:
    return job.created_at, job.job_id
