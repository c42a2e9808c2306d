"""Jobs: every invocation is one. The ``JobManager`` of a worker admits work (a bounded number
running, a bounded queue, 429 beyond), runs it, records each step's state, and for async and
streamed jobs publishes events through the broker so that any worker can answer for them.

Sync jobs live only in their worker's memory and never touch the broker: run-only sync invokes
stay free of writes at any worker count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from zserve import events as ev
from zserve.engine.job import JobRecord
from zserve.engine.plan import Plan
from zserve.engine.runner import Observer, execute
from zserve.errors import (
    ExecutionFailed,
    ExecutionTimeout,
    JobCancelled,
    JobFinished,
    NotFound,
    Overloaded,
    ServerError,
    StepFailed,
    ZServeError,
)

if TYPE_CHECKING:
    from zserve.broker.base import Broker

__all__ = ["JobManager", "JobRun"]

logger = logging.getLogger("zserve.jobs")

#: Seconds between the background chores (cancel requests, leases, pruning).
POLL_S = 0.1
LEASE_TTL_S = 3.0
SHUTDOWN = {"reason": "shutdown", "message": "The server shut down before the job finished"}
HEARTBEAT_S = 1.0


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value, fallback=repr, inf_nan_mode="null")


class JobRun(Observer):
    """Records the steps of one job and, when ``sink`` is set, turns them into events."""

    def __init__(
        self,
        record: JobRecord,
        loop: asyncio.AbstractEventLoop,
        sink: Callable[[ev.Event], None] | None,
    ) -> None:
        self.record = record
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.sink = sink
        self.steps = {s["name"]: s for s in record.steps}
        #: steps running in worker threads; a cancelled run keeps its slot until they return
        self._threads = 0
        self._lock = threading.Lock()
        self._when_idle: Callable[[], None] | None = None

    def when_threads_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) once no step of this run is running in a thread:
        at once, usually; a sync step cut short by cancel or timeout keeps running until it
        returns, and keeps its concurrency slot until then (design §10)."""
        with self._lock:
            if self._threads:
                self._when_idle = callback
                return
        callback()

    def _emit(self, kind: str, step: str | None, data: dict[str, Any]) -> None:
        if self.sink is None:
            return
        event = ev.Event(kind, self.record.job_id, time.time(), step, data)
        if threading.get_ident() == self.loop_thread:
            self.sink(event)
        else:
            self.loop.call_soon_threadsafe(self.sink, event)

    def step_started(self, step: str) -> None:
        if threading.get_ident() != self.loop_thread:
            with self._lock:
                self._threads += 1
        self.steps[step]["status"] = "running"
        self._emit(ev.STEP_STARTED, step, {})

    def step_finished(self, step: str, seconds: float, error: BaseException | None) -> None:
        if threading.get_ident() != self.loop_thread:
            with self._lock:
                self._threads -= 1
                idle, self._when_idle = (
                    (self._when_idle, None) if not self._threads else (None, self._when_idle)
                )
            if idle is not None:
                self.loop.call_soon_threadsafe(idle)
        state = self.steps[step]
        state["duration_ms"] = round(seconds * 1000, 3)
        if error is None:
            state["status"] = "completed"
            self._emit(ev.STEP_COMPLETED, step, {"duration_ms": state["duration_ms"]})
        else:
            state["status"] = "failed"
            detail = {"type": type(error).__name__, "message": str(error)}
            self._emit(ev.STEP_FAILED, step, {"duration_ms": state["duration_ms"],
                                              "error": detail})  # fmt: skip

    def chunk(self, step: str, item: Any) -> None:
        if self.sink is not None:
            self._emit(ev.STEP_CHUNK, step, {"chunk": _jsonable(item)})

    def progress(self, step: str, data: Any) -> None:
        if self.sink is not None:
            self._emit(ev.STEP_PROGRESS, step, {"progress": _jsonable(data)})

    def interrupted(self) -> list[str]:
        """Mark running steps cancelled; return the names of the steps that completed."""
        for state in self.record.steps:
            if state["status"] == "running":
                state["status"] = "cancelled"
        return [s["name"] for s in self.record.steps if s["status"] == "completed"]


class _Publisher:
    """Events of one job, handed to the broker in order, in batches (one write per batch)."""

    def __init__(self, broker: Broker, record: JobRecord) -> None:
        self.broker = broker
        self.record = record
        self.pending: list[ev.Event] = []
        self.flushing: asyncio.Task[None] | None = None

    def put(self, event: ev.Event) -> None:
        self.pending.append(event)
        if self.flushing is None:
            self.flushing = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                await self.broker.publish(self.record.job_id, batch, {"steps": self.record.steps})
        finally:
            self.flushing = None

    async def drain(self) -> None:
        while self.flushing is not None:
            await asyncio.shield(self.flushing)
        if self.pending:
            batch, self.pending = self.pending, []
            await self.broker.publish(self.record.job_id, batch, {"steps": self.record.steps})


class _Slot:
    """At most ``limit`` jobs run at once; the others wait in order, counted for the 429
    check. Entering a free slot does not suspend (the hot path of a sync invoke)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved by __aexit__, which hands its slot over
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # _release may have dropped it already
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.running -= 1


class JobManager:
    def __init__(
        self,
        plan: Plan,
        broker: Broker,
        *,
        capture: str = "none",
        max_concurrency: int = 64,
        max_queue: int = 1000,
        retention_s: float = 3600.0,
        retention_count: int = 10_000,
        on_finished: Callable[[str, float | None], None] | None = None,
    ) -> None:
        self.plan = plan
        self.broker = broker
        self.capture = capture
        #: "<pid>-<random>": which process runs a job (its lease), readable by people
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retention_s = retention_s
        self.retention_count = retention_count
        #: told (status, seconds) when an async or streamed job ends: the server's metrics
        self.on_finished = on_finished
        self._slot = _Slot(max_concurrency)
        #: submitted jobs whose task has not reached the slot yet
        self._starting = 0
        #: sync jobs, oldest first (they never reach the broker)
        self._local: OrderedDict[str, JobRecord] = OrderedDict()
        self._local_tasks: dict[str, asyncio.Task[Any]] = {}
        #: async jobs this worker runs
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runs: dict[str, JobRun] = {}
        self._cancelled: set[str] = set()
        self._chores: list[asyncio.Task[None]] = []
        self._closing = False
        self._drain: asyncio.Future[None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start()
        self._chores.append(asyncio.ensure_future(self._prune_loop()))
        if self.broker.kind != "memory":  # other workers share the broker
            await self.broker.heartbeat(self.worker_id, LEASE_TTL_S)
            self._chores.append(asyncio.ensure_future(self._cancel_loop()))
            self._chores.append(asyncio.ensure_future(self._lease_loop()))

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
        queued = [task for job_id, task in self._tasks.items() if job_id not in self._runs
                  or self._runs[job_id].record.status == "queued"]  # fmt: skip
        for task in queued:
            task.cancel()
        running = list(self._tasks.values())
        if running:
            await asyncio.wait(running, timeout=grace_s)
        tasks = dict(self._tasks)
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        for job_id, task in tasks.items():
            if task.cancelled():  # cancelled before it ever ran: end it here
                record = await self.broker.get(job_id)
                if record is not None and not record.finished:
                    await self._finish(record, ev.JOB_FAILED, {"error": SHUTDOWN},
                                       error=SHUTDOWN)  # fmt: skip

    async def shutdown(self, grace_s: float) -> None:
        """Drain (if that has not begun), then stop the chores and close the broker."""
        await self.drain(grace_s)
        for chore in self._chores:
            chore.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
        await self.broker.close()

    # -- admission ----------------------------------------------------------------------------

    def _admit(self) -> None:
        if self._closing:
            raise ServerError("The server is shutting down: retry on another server")
        waiting = self._slot.waiting + self._starting
        if self._slot.running >= self.max_concurrency and waiting >= self.max_queue:
            err = Overloaded(
                f"The server is at its limit ({self.max_concurrency} running, "
                f"{self.max_queue} queued): retry later"
            )
            err.retry_after = 1  # type: ignore[attr-defined]
            raise err

    def _new_record(self, mode: str, job_id: str | None = None) -> JobRecord:
        return JobRecord(
            job_id=job_id or str(uuid.uuid4()),
            created_at=time.time(),
            mode=mode,
            capture=self.capture,
            steps=[{"name": s.id, "status": "pending", "duration_ms": None}
                   for s in self.plan.steps],
            worker=self.worker_id,
        )  # fmt: skip

    # -- sync ---------------------------------------------------------------------------------

    async def run_sync(
        self, params: dict[str, Any], timeout_s: float | None, job_id: str | None = None
    ) -> tuple[JobRecord, dict[str, Any]]:
        """Run now and wait. Raises what ``execute`` raises; the record keeps the outcome."""
        self._admit()
        record = self._new_record("sync", job_id)
        self._remember(record)
        run = JobRun(record, asyncio.get_running_loop(), None)
        task = asyncio.current_task()
        if task is not None:
            self._local_tasks[record.job_id] = task
        try:
            await self._slot.acquire()
            try:
                record.status, record.started_at = "running", time.time()
                outputs = await execute(self.plan, params, job_id=record.job_id,
                                        capture=self.capture, timeout_s=timeout_s,
                                        observer=run)  # fmt: skip
            finally:
                run.when_threads_done(self._slot.release)
        except asyncio.CancelledError:
            self._end(record, "cancelled", run)
            if record.job_id in self._cancelled and task is not None:
                task.uncancel()  # cancelled through /jobs/{id}/cancel: answer, don't vanish
                raise JobCancelled(f"Job {record.job_id} was cancelled") from None
            raise
        except ZServeError as err:
            self._end(record, "failed", run, error=_error_of(err))
            raise
        finally:
            self._local_tasks.pop(record.job_id, None)
            self._cancelled.discard(record.job_id)
        self._end(record, "completed", run)
        return record, outputs

    def _remember(self, record: JobRecord) -> None:
        self._local[record.job_id] = record
        while len(self._local) > self.retention_count:
            self._local.popitem(last=False)

    @staticmethod
    def _end(
        record: JobRecord,
        status: str,
        run: JobRun,
        error: dict[str, Any] | None = None,
    ) -> None:
        if status != "completed":
            run.interrupted()
        # A sync job's caller got its outputs; keeping them would hold every answer in memory.
        record.status, record.finished_at = status, time.time()
        record.error = error

    # -- async --------------------------------------------------------------------------------

    async def submit(
        self, params: dict[str, Any], timeout_s: float | None, mode: str = "async"
    ) -> JobRecord:
        """Queue a job and return at once; it runs as soon as a slot is free."""
        self._admit()
        record = self._new_record(mode)
        self._starting += 1  # its place in the queue is taken before anything can interleave
        try:
            await self.broker.create(record, ev.Event(ev.JOB_QUEUED, record.job_id, time.time()))
        except BaseException:
            self._starting -= 1
            raise
        self._tasks[record.job_id] = asyncio.ensure_future(self._run_job(record, params, timeout_s))
        return record

    async def _run_job(
        self, record: JobRecord, params: dict[str, Any], timeout_s: float | None
    ) -> None:
        self._starting -= 1  # from here on the slot counts it
        job_id = record.job_id
        publisher = _Publisher(self.broker, record)
        run = JobRun(record, asyncio.get_running_loop(), publisher.put)
        self._runs[job_id] = run
        start = 0.0
        ending: tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]
        try:
            await self._slot.acquire()
            try:
                start = time.perf_counter()
                record.status, record.started_at = "running", time.time()
                await self.broker.publish(
                    job_id, [ev.Event(ev.JOB_STARTED, job_id, time.time())],
                    {"status": "running", "started_at": record.started_at},
                )  # fmt: skip
                outputs = await execute(self.plan, params, job_id=job_id, capture=self.capture,
                                        timeout_s=timeout_s, observer=run)  # fmt: skip
            finally:
                run.when_threads_done(self._slot.release)
            elapsed_ms = round((time.perf_counter() - start) * 1000, 3)
            outputs = _jsonable(outputs)
            data = {"outputs": outputs, "execution_time_ms": elapsed_ms}
            ending = (ev.JOB_COMPLETED, data, outputs, None)
        except asyncio.CancelledError:
            completed = run.interrupted()
            if job_id in self._cancelled:
                ending = (ev.JOB_CANCELLED, {"steps_completed": completed}, None, None)
            else:  # the worker is shutting down
                ending = (ev.JOB_FAILED, {"error": SHUTDOWN}, None, SHUTDOWN)
        except ZServeError as err:
            run.interrupted()
            error = _error_of(err)
            ending = (ev.JOB_FAILED, {"error": error}, None, error)
        except Exception as exc:  # a bug of ours: the job must still end
            logger.exception("Job %s failed unexpectedly", job_id)
            error = {"reason": "error", "message": f"{type(exc).__name__}: {exc}"}
            ending = (ev.JOB_FAILED, {"error": error}, None, error)
        try:
            kind, data, outputs_, error_ = ending
            await _uncancellable(self._conclude(publisher, record, kind, data, outputs_, error_))
        finally:
            self._tasks.pop(job_id, None)
            self._runs.pop(job_id, None)
            self._cancelled.discard(job_id)

    async def _conclude(
        self,
        publisher: _Publisher,
        record: JobRecord,
        kind: str,
        data: dict[str, Any],
        outputs: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> None:
        """The events still pending, then the terminal one: a job always ends."""
        try:
            await publisher.drain()
        finally:
            await self._finish(record, kind, data, outputs=outputs, error=error)
        if self.on_finished is not None:
            status = ev.TERMINAL[kind]
            if error is not None and error.get("reason") == "timeout":
                status = "timeout"
            started, finished = record.started_at, record.finished_at
            took = finished - started if started and finished and status == "completed" else None
            self.on_finished(status, took)

    async def _finish(
        self,
        record: JobRecord,
        kind: str,
        data: dict[str, Any],
        *,
        outputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        record.finished_at = time.time()
        changes: dict[str, Any] = {"finished_at": record.finished_at, "steps": record.steps}
        if outputs is not None:
            changes["outputs"] = outputs
        if error is not None:
            changes["error"] = error
        terminal = ev.Event(kind, record.job_id, record.finished_at, None, data)
        await self.broker.finish(record.job_id, terminal, changes)

    # -- queries and cancel -------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        record = self._local.get(job_id) or await self.broker.get(job_id)
        if record is None:
            raise NotFound(f"No job {job_id!r} (finished jobs are kept for a limited time)")
        return record

    async def count_by_status(self) -> dict[str, int]:
        """Jobs by state: this worker's sync jobs and all the broker's jobs."""
        counts = await self.broker.count_by_status()
        for job in self._local.values():
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    async def list_jobs(self, status: str | None, limit: int) -> list[JobRecord]:
        local = [j for j in self._local.values() if status is None or j.status == status]
        shared = await self.broker.list_jobs(status, limit)
        merged = sorted([*local, *shared], key=lambda j: j.created_at, reverse=True)
        return merged[:limit]

    async def cancel(self, job_id: str) -> JobRecord:
        record = await self.get(job_id)
        if record.finished:
            raise JobFinished(f"Job {job_id} already {record.status}: nothing to cancel")
        task = self._tasks.get(job_id) or self._local_tasks.get(job_id)
        if task is not None:
            if job_id not in self._cancelled:  # a second request must not cut the first short
                self._cancelled.add(job_id)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(task), 5)
        else:  # another worker runs it: it polls for cancel requests
            await self.broker.request_cancel(job_id)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                found = await self.broker.get(job_id)
                if found is None or found.finished:
                    break
                await asyncio.sleep(POLL_S / 2)
        return await self.get(job_id)

    # -- chores -------------------------------------------------------------------------------

    async def _cancel_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                if self._tasks:
                    for job_id in await self.broker.cancel_requested(list(self._tasks)):
                        if job_id in self._cancelled:
                            continue  # already being cancelled
                        self._cancelled.add(job_id)
                        if task := self._tasks.get(job_id):
                            task.cancel()
            except Exception:
                logger.exception("Checking cancel requests failed")

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.broker.heartbeat(self.worker_id, LEASE_TTL_S)
                for job in await self.broker.expired(time.time()):
                    error = {"reason": "worker_lost",
                             "message": "The worker running this job stopped"}  # fmt: skip
                    terminal = ev.Event(ev.JOB_FAILED, job.job_id, time.time(), None,
                                        {"error": error})  # fmt: skip
                    steps = [{**s, "status": "failed"} if s["status"] == "running" else s
                             for s in job.steps]  # fmt: skip
                    changes = {"finished_at": time.time(), "error": error, "steps": steps}
                    await self.broker.finish(job.job_id, terminal, changes)
                    logger.warning("Job %s failed: its worker %s was lost", job.job_id, job.worker)
            except Exception:
                logger.exception("Lease upkeep failed")

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.retention_s / 2))
            now = time.time()
            while self._local:
                oldest = next(iter(self._local.values()))
                if not oldest.finished or (oldest.finished_at or now) >= now - self.retention_s:
                    break
                self._local.popitem(last=False)
            try:
                await self.broker.prune(now - self.retention_s, self.retention_count)
            except Exception:
                logger.exception("Pruning finished jobs failed")


async def _uncancellable(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to the end even if the calling task is cancelled meanwhile (a second cancel
    request, or shutdown): a job's terminal event must be written."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    task.result()


def _error_of(err: ZServeError) -> dict[str, Any]:
    if isinstance(err, StepFailed):
        return {"reason": "step_failed", "step": err.step, "message": str(err)}
    if isinstance(err, ExecutionTimeout):
        return {"reason": "timeout", "message": str(err)}
    if isinstance(err, ExecutionFailed):
        return {"reason": "failed", "message": str(err)}
    return {"reason": err.problem, "message": str(err)}
