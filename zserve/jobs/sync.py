"""``SyncJobs``: running a sync job, mixed into ``JobManager`` with the admission and the
record every job starts from. A sync job lives only in its worker's memory (``LocalJobs``) and
never touches the broker: run-only sync invokes stay free of writes. This is the hot path."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from zserve import events as ev
from zserve.engine.capture import RequestCapture
from zserve.engine.observer import Observer
from zserve.engine.plan import Plan
from zserve.engine.recorder import RunRecorder
from zserve.engine.runner import execute
from zserve.engine.tracking import Tracking
from zserve.errors import JobCancelled, ServerError, StoreUnavailable, ZServeError
from zserve.jobs.keeper import RunKeeper, store_unavailable
from zserve.jobs.outcome import Outcome, conclude, error_of
from zserve.jobs.queries import JobQueries
from zserve.jobs.slots import Slots
from zserve.jobs.steps import LiveTracker, StepTracker
from zserve.records import JobMode, JobRecord, JobStatus, StepStatus, new_job_id

__all__ = ["SyncJobs"]

#: A sync job that completed (its outputs go to the caller, not into the record).
_SYNC_COMPLETED = Outcome(JobStatus.COMPLETED)
# Looked up once: an enum member lookup costs ~45 ns on Python 3.11 (the sync hot path).
_RUNNING, _PENDING = JobStatus.RUNNING, StepStatus.PENDING


class SyncJobs(JobQueries):
    plan: Plan
    tracking: Tracking
    runs: RunKeeper
    worker_id: str
    max_queue: int
    observer_for: Callable[[JobRecord], Observer | None] | None
    _slots: Slots
    _starting: int
    _closing: bool
    _loop: asyncio.AbstractEventLoop | None
    _local_tasks: dict[str, asyncio.Task[Any]]
    _cancelled: set[str]

    def _admit(self) -> None:
        if self._closing:
            raise ServerError("The server is shutting down: retry on another server")
        self._slots.admit(self._starting, self.max_queue)

    def _new_record(
        self, mode: JobMode, capture: RequestCapture, job_id: str | None = None
    ) -> JobRecord:
        return JobRecord(
            job_id=job_id or new_job_id(),
            created_at=time.time(),
            mode=mode,
            capture=capture.mode,
            capture_requested=capture.requested if capture.mode != capture.requested else None,
            steps=[{"name": s.id, "status": _PENDING, "duration_ms": None}
                   for s in self.plan.steps],
            worker=self.worker_id,
        )  # fmt: skip

    # -- sync ---------------------------------------------------------------------------------

    async def run_sync(
        self,
        params: dict[str, Any],
        timeout_s: float | None,
        job_id: str | None = None,
        capture: RequestCapture | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
        sink: Callable[[ev.Event], None] | None = None,
    ) -> tuple[JobRecord, dict[str, Any]]:
        """Run now and wait. Raises what ``execute`` raises (the record keeps the outcome and
        the run id), or StoreUnavailable when a required record could not be stored. While it
        waits for a slot, ``client_gone`` (returns when the caller has left) drops it:
        JobCancelled, and it never runs. ``sink`` gets the job's events up to its terminal one
        (``LiveTracker``), for a caller that streams them."""
        self._admit()
        capture = capture or self.tracking.usual
        if capture.mode != "none":
            self.runs.refuse_unrecordable(capture)
        record = self._new_record("sync", capture, job_id)
        self._local.add(record)
        loop = self._loop or asyncio.get_running_loop()  # which costs a getpid() on 3.11
        tracker = (StepTracker(record, loop, None) if sink is None
                   else LiveTracker(record, loop, sink))  # fmt: skip
        # run-only pays no call for tracked mode (the sync hot path)
        recorder = None if capture.mode == "none" else self.runs.recorder(capture, record.job_id)
        task = asyncio.current_task(loop)
        if task is not None:
            self._local_tasks[record.job_id] = task
        try:
            if not self._slots.take():  # a free slot is taken without suspending
                slots = self._slots
                await (slots.acquire(sync=True) if client_gone is None
                       else slots.acquire_while_wanted(record.job_id, client_gone))  # fmt: skip
            try:
                record.status, record.started_at = _RUNNING, time.time()
                observers = self._observers(record, tracker, recorder)
                outputs = await execute(self.plan, params, job_id=record.job_id,
                                        capture=capture.mode, timeout_s=timeout_s,
                                        observers=observers)  # fmt: skip
            finally:
                tracker.when_threads_done(self._slots.release)
        except asyncio.CancelledError:
            conclude(record, Outcome.cancelled(tracker.completed_steps()))
            self.runs.keep_later(record, recorder)
            if record.job_id in self._cancelled and task is not None:
                task.uncancel()  # cancelled through /jobs/{id}/cancel: answer, don't vanish
                raise JobCancelled(f"Job {record.job_id} was cancelled") from None
            raise
        except JobCancelled:  # its client left while it was queued: it never ran
            conclude(record, Outcome.cancelled([]))
            self.runs.keep_later(record, recorder)
            raise
        except ZServeError as err:
            conclude(record, Outcome.failed(error_of(err)))
            with contextlib.suppress(StoreUnavailable):  # the run's own failure is the answer
                await self.runs.keep(record, recorder)
            raise
        finally:
            self._local_tasks.pop(record.job_id, None)
            self._cancelled.discard(record.job_id)
        if recorder is not None:
            try:
                await self.runs.keep(record, recorder)
            except StoreUnavailable as err:
                conclude(record, Outcome.failed(store_unavailable(err)))
                raise
        conclude(record, _SYNC_COMPLETED)
        return record, outputs

    def _observers(
        self, record: JobRecord, tracker: StepTracker, recorder: RunRecorder | None
    ) -> tuple[Observer, ...]:
        found: tuple[Observer, ...] = (tracker,) if recorder is None else (tracker, recorder)
        if self.observer_for is not None and (extra := self.observer_for(record)) is not None:
            found += (extra,)
        return found

    def local_record(self, job_id: str) -> JobRecord | None:
        """A sync job of this worker, while it is retained."""
        return self._local.get(job_id)
