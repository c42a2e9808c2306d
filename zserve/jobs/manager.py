"""``JobManager``: a worker's jobs. It admits work (a bounded number running, a bounded queue,
429 beyond), runs it, keeps each step's state, and for async and streamed jobs publishes events
through the broker so that any worker can answer for them.

Sync jobs live only in their worker's memory and never touch the broker: run-only sync invokes
stay free of writes at any worker count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from zserve import events as ev
from zserve.broker.base import Broker, IdempotencyKey
from zserve.engine.capture import RequestCapture
from zserve.engine.observer import Observer
from zserve.engine.plan import Plan
from zserve.engine.recorder import RunRecorder
from zserve.engine.runner import execute
from zserve.engine.tracking import Tracking
from zserve.engine.values import jsonable
from zserve.errors import (
    BrokerUnavailable,
    JobFinished,
    StoreUnavailable,
    ZServeError,
)
from zserve.jobs.ending import write_end
from zserve.jobs.keeper import RunKeeper, store_unavailable
from zserve.jobs.local import LocalJobs
from zserve.jobs.outcome import (
    BROKER_BACKLOG,
    SHUTDOWN,
    SUBMIT_LOST,
    TAKEN,
    Outcome,
    error_of,
    log_job_failure,
    terminal,
    uncancellable,
)
from zserve.jobs.publisher import EventPublisher
from zserve.jobs.slots import Slots
from zserve.jobs.steps import StepTracker
from zserve.jobs.sync import SyncJobs
from zserve.jobs.upkeep import POLL_S, Upkeep
from zserve.records import (
    JobError,
    JobMode,
    JobRecord,
    JobStatus,
    RunRecord,
)

__all__ = ["JobManager"]

logger = logging.getLogger("zserve.jobs")

#: How long a stopping worker retries writing jobs' ends past its grace period.
END_RETRY_S = 5.0
#: Unsure submits a worker keeps (see ``JobManager._unsure``); beyond, they are forgotten (a job
#: that reached the broker then stays queued until its worker stops).
MAX_UNSURE = 1000
#: record, parameters, timeout, capture, whether it came with an idempotency key
_Unsure = tuple[JobRecord, dict[str, Any], float | None, RequestCapture, bool]


class JobManager(SyncJobs):
    def __init__(
        self,
        plan: Plan,
        broker: Broker,
        *,
        tracking: Tracking | None = None,
        write_run: Callable[[RunRecord], Awaitable[None]] | None = None,
        store_failing: Callable[[], str | None] = lambda: None,
        max_concurrency: int = 64,
        max_queue: int = 1000,
        retention_s: float = 3600.0,
        retention_count: int = 10_000,
        on_finished: Callable[[str, float | None], None] | None = None,
        observer_for: Callable[[JobRecord], Observer | None] | None = None,
    ) -> None:
        self.plan = plan
        self.broker = broker
        self.tracking = tracking or Tracking(plan)
        self.runs = RunKeeper(self.tracking, write_run, store_failing)
        #: "<pid>-<random>": which process runs a job (its lease), readable by people
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        #: told (outcome, seconds) when an async or streamed job ends: the server's metrics
        self.on_finished = on_finished
        #: one more listener per job (OpenTelemetry spans), when configured
        self.observer_for = observer_for
        self._slots = Slots(max_concurrency)
        #: submitted jobs whose task has not reached the slots yet
        self._starting = 0
        self._local = LocalJobs(retention_count)
        self._local_tasks: dict[str, asyncio.Task[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # set by start()
        #: broker jobs this worker runs
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._trackers: dict[str, StepTracker] = {}
        self._cancelled: set[str] = set()
        #: broker jobs stopped by this worker, and why (see ``_stop_job``)
        self._stopped: dict[str, JobError] = {}
        #: submits answered 503 whose job may have reached the broker all the same (the answer
        #: to its create was lost): what running it takes, until ``_settle``
        self._unsure: dict[str, _Unsure] = {}
        self._upkeep = Upkeep(
            broker, self.worker_id, self._local,
            retention_s=retention_s, retention_count=retention_count,
            running=self._tasks.keys, cancel=self._cancel_task, settle=self._settle,
        )  # fmt: skip
        self._closing = False
        self._end_by = float("inf")
        self._drain: asyncio.Future[None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.broker.start()
        await self._upkeep.start()

    def begin_drain(self, grace_s: float) -> asyncio.Future[None]:
        """Start draining (once); the returned future is done when the drain is."""
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drain_jobs(grace_s))
        return self._drain

    async def drain(self, grace_s: float) -> None:
        await asyncio.shield(self.begin_drain(grace_s))

    async def _drain_jobs(self, grace_s: float) -> None:
        """Stop taking work. Queued jobs end ``failed`` with reason ``shutdown`` at once;
        running ones get ``grace_s`` seconds, then end the same way. Their terminal events are
        published, so open streams end properly."""
        self._closing = True
        self._end_by = time.monotonic() + grace_s + END_RETRY_S
        for job_id, task in self._tasks.items():
            tracker = self._trackers.get(job_id)
            if tracker is None or tracker.record.status == JobStatus.QUEUED:
                task.cancel()
        running = list(self._tasks.values())
        if running:
            await asyncio.wait(running, timeout=grace_s)
        tasks = dict(self._tasks)
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        unrun = [job_id for job_id, task in tasks.items() if task.cancelled()]
        await asyncio.gather(*(write_end(partial(self._end_unrun, job_id), job_id,
                                         self._out_of_time) for job_id in unrun))  # fmt: skip

    async def _end_unrun(self, job_id: str) -> None:
        record = await self.broker.get(job_id)
        if record is not None and not record.finished:
            await self.broker.finish(job_id, *terminal(record, Outcome.failed(SHUTDOWN)))

    def _out_of_time(self) -> bool:
        """Whether a worker that is stopping must give up writing jobs' ends."""
        return self._closing and time.monotonic() > self._end_by

    async def shutdown(self, grace_s: float) -> None:
        """Drain (if that has not begun), then stop the upkeep and close the broker."""
        await self.drain(grace_s)
        await self._upkeep.stop()
        await self.broker.close()

    # -- admission ----------------------------------------------------------------------------

    # -- async --------------------------------------------------------------------------------

    async def submit(
        self,
        params: dict[str, Any],
        timeout_s: float | None,
        mode: JobMode = "async",
        capture: RequestCapture | None = None,
        idempotency: IdempotencyKey | None = None,
    ) -> JobRecord:
        """Queue a job and return at once; it runs as soon as a slot is free. With
        ``idempotency``: KeyHeld when a job holds the key (``jobs.once.submit_once``)."""
        self._admit()
        capture = capture or self.tracking.usual
        record = self._new_record(mode, capture)
        self._starting += 1  # its place in the queue is taken before anything can interleave
        try:
            queued = ev.Event(ev.JOB_QUEUED, record.job_id, time.time())
            await self.broker.create(record, queued, idempotency)
        except BaseException as exc:
            self._starting -= 1
            unsure = isinstance(exc, BrokerUnavailable) and not exc.lasting
            if unsure and len(self._unsure) < MAX_UNSURE:
                keyed = idempotency is not None
                self._unsure[record.job_id] = (record, params, timeout_s, capture, keyed)
            raise
        run = self._run_job(record, params, timeout_s, capture)
        self._tasks[record.job_id] = asyncio.ensure_future(run)
        return record

    async def _settle(self) -> None:
        """Submits answered 503 whose job reached the broker all the same: one sent with an
        idempotency key runs (a retry with that key is answered with this job); any other ends
        failed, as its client was told to retry and may have submitted another."""
        for job_id, (record, params, timeout_s, capture, keyed) in list(self._unsure.items()):
            found = await self.broker.get(job_id)
            del self._unsure[job_id]
            if found is None or found.status != JobStatus.QUEUED:
                continue  # it never reached the broker
            if keyed and not self._closing:
                logger.warning("Job %s: its submit was answered 503, but it reached the broker: "
                               "it runs, for a retry with its idempotency key", job_id)  # fmt: skip
                self._starting += 1
                run = self._run_job(record, params, timeout_s, capture)
                self._tasks[job_id] = asyncio.ensure_future(run)
            else:
                await self.broker.finish(job_id, *terminal(found, Outcome.failed(SUBMIT_LOST)))

    async def _run_job(
        self,
        record: JobRecord,
        params: dict[str, Any],
        timeout_s: float | None,
        capture: RequestCapture,
    ) -> None:
        self._starting -= 1  # from here on the slots count it
        job_id = record.job_id
        publisher = EventPublisher(
            self.broker, record,
            on_overflow=partial(self._stop_job, job_id, BROKER_BACKLOG),
            on_gone=partial(self._stop_job, job_id, TAKEN),
        )  # fmt: skip
        tracker = StepTracker(record, asyncio.get_running_loop(), publisher.put)
        self._trackers[job_id] = tracker
        try:
            recorder = self.runs.recorder(capture, job_id)
            outcome = await self._outcome_of(record, params, timeout_s, tracker, recorder)
            if recorder is not None and outcome.status is not JobStatus.COMPLETED:
                with contextlib.suppress(StoreUnavailable):  # the job's own end is the answer
                    await uncancellable(self.runs.keep(record, recorder))
            end = partial(self._end, publisher, record, outcome)
            await uncancellable(write_end(end, job_id, self._out_of_time))
        finally:
            self._tasks.pop(job_id, None)
            self._trackers.pop(job_id, None)
            self._cancelled.discard(job_id)
            self._stopped.pop(job_id, None)

    def _stop_job(self, job_id: str, error: JobError) -> None:
        """Stop a broker job that cannot go on: its events piled up while the broker was
        unreachable, or it was taken from this worker (its end is then refused)."""
        task = self._tasks.get(job_id)
        if task is not None and job_id not in self._stopped:
            self._stopped[job_id] = error
            logger.warning("Job %s stopped: %s", job_id, error["message"])
            task.cancel()

    async def _outcome_of(
        self,
        record: JobRecord,
        params: dict[str, Any],
        timeout_s: float | None,
        tracker: StepTracker,
        recorder: RunRecorder | None,
    ) -> Outcome:
        """Run a broker job once it has a slot; how it ended, whatever happened. A completed
        run's record is stored before it counts as completed."""
        job_id = record.job_id
        capture = record.capture
        try:
            await self._slots.acquire()
            try:
                start = time.perf_counter()
                record.status, record.started_at = JobStatus.RUNNING, time.time()
                if (reason := self.runs.failing_for(capture)) is not None:
                    return Outcome.failed(store_unavailable(reason))
                await self.broker.publish(
                    job_id, [ev.Event(ev.JOB_STARTED, job_id, time.time(), None,
                                      {"capture": capture})],
                    {"status": JobStatus.RUNNING, "started_at": record.started_at},
                )  # fmt: skip
                observers = self._observers(record, tracker, recorder)
                outputs = await execute(self.plan, params, job_id=job_id, capture=capture,
                                        timeout_s=timeout_s, observers=observers)  # fmt: skip
            finally:
                tracker.when_threads_done(self._slots.release)
            elapsed_ms = round((time.perf_counter() - start) * 1000, 3)
            await self.runs.keep(record, recorder)
            return Outcome.completed(jsonable(outputs), elapsed_ms)
        except StoreUnavailable as err:
            return Outcome.failed(store_unavailable(err))
        except asyncio.CancelledError:
            if job_id in self._cancelled:
                return Outcome.cancelled(tracker.completed_steps())
            # the worker is shutting down, or stopped the job (_stop_job)
            return Outcome.failed(self._stopped.get(job_id, SHUTDOWN))
        except ZServeError as err:
            log_job_failure(job_id, record.mode, err)
            return Outcome.failed(error_of(err))
        except Exception as exc:  # a bug of ours: the job must still end
            logger.exception("Job %s failed unexpectedly", job_id)
            return Outcome.failed({"reason": "error", "message": f"{type(exc).__name__}: {exc}"})

    async def _end(self, publisher: EventPublisher, record: JobRecord, outcome: Outcome) -> None:
        """The events still pending, then the terminal one: a job always ends."""
        try:
            await publisher.drain()
        except BrokerUnavailable:
            raise  # retried (with the events), or the broker is lost
        except Exception:  # a bug of ours: the job must still end
            logger.exception("Job %s: its last events could not be published", record.job_id)
        ended = await self.broker.finish(record.job_id, *terminal(record, outcome))
        if ended is not None and self.on_finished is not None:
            started, finished = record.started_at, record.finished_at
            completed = outcome.status is JobStatus.COMPLETED
            took = finished - started if started and finished and completed else None
            self.on_finished(outcome.metric, took)

    # -- cancel ------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobRecord:
        record = await self.get(job_id)
        if record.finished:
            raise JobFinished(f"Job {job_id} already {record.status}: nothing to cancel")
        task = self._tasks.get(job_id) or self._local_tasks.get(job_id)
        if task is None:  # another worker runs it: it polls for cancel requests
            await self.broker.request_cancel(job_id)
            return await self.after_cancel(job_id, 5, POLL_S / 2)
        self._cancel_task(job_id)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(task), 5)
        return await self.after_cancel(job_id, 0, 0)

    def _cancel_task(self, job_id: str) -> None:
        """Cancel the task of a job this worker runs (once: a second request must not cut the
        first one's clean-up short)."""
        if job_id in self._cancelled:
            return
        task = self._tasks.get(job_id) or self._local_tasks.get(job_id)
        if task is not None:
            self._cancelled.add(job_id)
            task.cancel()
