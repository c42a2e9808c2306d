"""``LocalJobs``: a worker's sync jobs, kept in its memory only (they never reach the broker)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from zserve.records import JobRecord

__all__ = ["LocalJobs"]


class LocalJobs:
    """Sync jobs, oldest first: at most ``limit`` of them, finished ones for a limited time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._jobs: OrderedDict[str, JobRecord] = OrderedDict()

    def add(self, record: JobRecord) -> None:
        self._jobs[record.job_id] = record
        while len(self._jobs) > self.limit:
            self._jobs.popitem(last=False)

    def get(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    def __iter__(self) -> Iterator[JobRecord]:
        return iter(self._jobs.values())

    def prune(self, before: float) -> None:
        """Forget the oldest jobs that finished before ``before`` (up to the first unfinished)."""
        while self._jobs:
            oldest = next(iter(self._jobs.values()))
            if not oldest.finished or (oldest.finished_at or before) >= before:
                return
            self._jobs.popitem(last=False)
