"""How a job ended, and the one way a job is ended: ``conclude`` sets a record's final state
from an ``Outcome``; ``terminal`` does that and gives the terminal event and the changes a broker
stores with it, for jobs that live in the broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from zserve import events as ev
from zserve.errors import ExecutionFailed, ExecutionTimeout, JobCancelled, StepFailed, ZServeError
from zserve.records import JobError, JobRecord, JobStatus, StepStatus

__all__ = [
    "BROKER_BACKLOG",
    "SHUTDOWN",
    "SUBMIT_LOST",
    "TAKEN",
    "WORKER_LOST",
    "Outcome",
    "conclude",
    "error_of",
    "log_job_failure",
    "terminal",
    "uncancellable",
]

logger = logging.getLogger("zserve.jobs")

SHUTDOWN: JobError = {
    "reason": "shutdown",
    "message": "The server shut down before the job finished",
}
WORKER_LOST: JobError = {"reason": "worker_lost", "message": "The worker running this job stopped"}
#: What this worker concludes about a job the others failed ``worker_lost`` while it was away
#: (its lease ran out): it stops running it (its end is refused by the broker anyway).
TAKEN: JobError = {
    "reason": "worker_lost",
    "message": "The job was taken from this worker while it could not renew its lease",
}
SUBMIT_LOST: JobError = {
    "reason": "broker_unavailable",
    "message": "Its submit was answered 503 (the job broker did not answer in time), so it was "
    "not run: the client was told to retry",
}
BROKER_BACKLOG: JobError = {
    "reason": "broker_unavailable",
    "message": "The job broker could not take this job's events for too long (more were waiting "
    "than a worker keeps): the job was stopped. Check that the broker (Redis) is reachable",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a job: completed with outputs, failed with an error, or cancelled."""

    status: JobStatus
    outputs: dict[str, Any] | None = None
    error: JobError | None = None
    execution_time_ms: float | None = None
    #: A cancelled job's steps that had completed.
    steps_completed: tuple[str, ...] = ()

    @classmethod
    def completed(cls, outputs: dict[str, Any], execution_time_ms: float | None) -> Outcome:
        return cls(JobStatus.COMPLETED, outputs=outputs, execution_time_ms=execution_time_ms)

    @classmethod
    def failed(cls, error: JobError) -> Outcome:
        return cls(JobStatus.FAILED, error=error)

    @classmethod
    def cancelled(cls, steps_completed: list[str]) -> Outcome:
        return cls(JobStatus.CANCELLED, steps_completed=tuple(steps_completed))

    @property
    def metric(self) -> str:
        """The outcome as the metrics count it: a timeout is counted apart from other failures."""
        if self.error is not None and self.error["reason"] == "timeout":
            return "timeout"
        return self.status.value

    def event_data(self) -> dict[str, Any]:
        if self.status is JobStatus.COMPLETED:
            return {"outputs": self.outputs, "execution_time_ms": self.execution_time_ms}
        if self.status is JobStatus.CANCELLED:
            return {"steps_completed": list(self.steps_completed)}
        return {"error": self.error}


_COMPLETED = JobStatus.COMPLETED  # looked up once: conclude() runs for every sync invoke


def conclude(record: JobRecord, outcome: Outcome) -> None:
    """End ``record`` with ``outcome``: its running steps are marked (cancelled, or failed when
    their worker was lost), its status, end time and error set. Outputs are not kept here: a
    sync job's caller has them, and a broker keeps them from ``terminal``'s changes."""
    if outcome.status is not _COMPLETED:
        lost = outcome.error is not None and outcome.error["reason"] == "worker_lost"
        for step in record.steps:
            if step["status"] == StepStatus.RUNNING:
                step["status"] = StepStatus.FAILED if lost else StepStatus.CANCELLED
    record.status = outcome.status
    record.finished_at = time.time()
    record.error = outcome.error


def terminal(record: JobRecord, outcome: Outcome) -> tuple[ev.Event, dict[str, Any]]:
    """``conclude``, then the job's terminal event and the changes ``Broker.finish`` stores."""
    conclude(record, outcome)
    changes: dict[str, Any] = {"finished_at": record.finished_at, "steps": record.steps}
    if outcome.outputs is not None:
        changes["outputs"] = outcome.outputs
    if outcome.error is not None:
        changes["error"] = outcome.error
    if record.run_id is not None:
        changes["run_id"] = record.run_id
    kind = ev.TERMINAL_EVENT[outcome.status]
    data = outcome.event_data()
    data["run_id"] = record.run_id
    event = ev.Event(kind, record.job_id, record.finished_at or time.time(), None, data)
    return event, changes


def error_of(err: ZServeError) -> JobError:
    """A job's ``error`` for the error that failed its run."""
    if isinstance(err, StepFailed):
        if err.step is None:
            return {"reason": "step_failed", "message": str(err)}
        return {"reason": "step_failed", "step": err.step, "message": str(err)}
    if isinstance(err, ExecutionTimeout):
        return {"reason": "timeout", "message": str(err)}
    if isinstance(err, ExecutionFailed):
        return {"reason": "failed", "message": str(err)}
    return {"reason": "error", "message": str(err)}


def log_job_failure(job_id: str, mode: str, err: ZServeError) -> None:
    """How a job that did not complete is logged, the same for sync, async and streamed jobs:
    one line, with the traceback only when a step raised."""
    if isinstance(err, JobCancelled):
        logger.info("Job %s (%s) was cancelled", job_id, mode)
    elif isinstance(err, ExecutionTimeout):
        logger.warning("Job %s (%s) timed out: %s", job_id, mode, err)
    elif isinstance(err, StepFailed):
        logger.error("Job %s (%s) failed: %s", job_id, mode, err, exc_info=err.__cause__ or err)
    else:
        logger.warning("Job %s (%s) failed: %s", job_id, mode, err)


async def uncancellable(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to the end even if the calling task is cancelled meanwhile (a second cancel
    request, or shutdown): a job's terminal event must be written."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    task.result()
