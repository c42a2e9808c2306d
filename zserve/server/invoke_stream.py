"""One-request streaming: ``POST /invoke`` with ``Accept: text/event-stream`` answers with the
invocation's events as Server-Sent Events on the same response.

The invocation is a sync job like any other (``JobManager.run_sync``: the sync queue, the
request's timeout, tracked mode, its record in the worker's memory for ``GET /jobs/{id}`` and
``POST /jobs/{id}/cancel``), whose events (``LiveTracker``) are handed to this response instead
of the broker: nothing is written for them. The answer is decided once the request is parsed and
the job admitted, so a refusal (422, 429, 503...) is still a problem+json answer with its status.
Then come ``job.queued``, ``job.started``, the step events and one terminal event, in the same
JSON as ``GET /stream/{id}`` (numbered 1, 2, 3... here), with ``: ping`` comments while nothing
happens. A client that goes away cancels the invocation.

The events go through a ``Feed`` of this worker (``server/feeds.py``) that numbers them, so
``GET /stream/{id}`` and ``WS /stream`` on the same worker can attach to the invocation by its
id, replay what it sent so far with the same numbers, and follow it to the same terminal event
(made once, when the job ends, whether its answer is still read or not). Attaching does not
keep the invocation alive: it still ends when its own client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from zserve import events as ev
from zserve.engine.capture import RequestCapture
from zserve.engine.values import jsonable
from zserve.errors import JobCancelled, Overloaded, ZServeError
from zserve.jobs import JobManager
from zserve.jobs.outcome import Outcome, error_of, log_job_failure
from zserve.records import JobRecord, StepStatus, new_job_id
from zserve.server.feeds import Feed, Feeds
from zserve.server.metrics import Metrics
from zserve.server.sse import PING, SSE_HEADERS, SSE_RETRY, sse

__all__ = ["FEATURE", "EventStream", "InvokeStreams", "wants_events"]

logger = logging.getLogger("zserve.server")

#: How ``GET /info`` says that this server streams an invocation on its own answer.
FEATURE = "invoke-stream"
_EVENT_STREAM = b"text/event-stream"


def wants_events(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's ``Accept`` (its first one) names ``text/event-stream``."""
    for name, value in headers:
        if name == b"accept":
            return _EVENT_STREAM in value
    return False


class EventStream(StreamingResponse):
    """An event stream whose job is cancelled when the answer ends before the job does (the
    client went away, or the server could not send)."""

    def __init__(self, body: AsyncIterator[bytes], job: asyncio.Future[Any], job_id: str) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={**SSE_HEADERS, "X-Job-Id": job_id})  # fmt: skip
        self.job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.job.done():
                self.job.cancel()


class InvokeStreams:
    """This worker's streamed invocations: runs one as a sync job of ``jobs`` (``start``) and
    keeps its events for the answers that attach to it (``feed``, ``feeds``); ``metrics``
    count each one as a sync invoke."""

    def __init__(self, jobs: JobManager, metrics: Metrics, ping_s: float) -> None:
        self.jobs = jobs
        self.metrics = metrics
        #: a ``: ping`` every this many seconds without an event
        self.ping_s = ping_s
        self.feeds = Feeds(lambda job_id: jobs.local_record(job_id) is not None)

    def feed(self, job_id: str) -> Feed | None:
        """The events of a streamed invocation of this worker, while they are kept."""
        return self.feeds.get(job_id)

    async def start(
        self, params: dict[str, Any], timeout_s: float | None, capture: RequestCapture
    ) -> Response:
        """Run the invocation and answer with its events (see the module)."""
        job_id = new_job_id()
        feed = self.feeds.open(job_id)
        start = time.perf_counter()
        job = asyncio.ensure_future(
            self.jobs.run_sync(params, timeout_s, job_id, capture, sink=feed.add)
        )
        # after every event it made: its terminal one, for this answer and every follower
        job.add_done_callback(partial(self._ended, feed, capture, start))
        try:
            while not feed.events and not feed.ended:  # job.queued once admitted
                await feed.changed()
        except BaseException:
            job.cancel()
            raise
        if not feed.events:  # refused before it was a job: its problem+json answer
            try:
                job.result()
            except Overloaded:
                self.metrics.record("rejected", capture.mode, None)
                raise
            raise AssertionError("a sync job ended without its first event")  # pragma: no cover

        async def body() -> AsyncIterator[bytes]:
            retry = SSE_RETRY
            async for event in feed.follow(0, self.ping_s):
                if event is None:
                    yield PING
                else:
                    yield retry + sse(event)
                    retry = b""

        return EventStream(body(), job, job_id)

    def _ended(
        self,
        feed: Feed,
        capture: RequestCapture,
        start: float,
        job: asyncio.Future[tuple[JobRecord, dict[str, Any]]],
    ) -> None:
        if not feed.events:  # refused: nothing to follow
            feed.close()
            self.feeds.ended(feed, keep=False)
            return
        feed.add(_terminal(self.jobs, self.metrics, job, feed.job_id, capture, start))
        self.feeds.ended(feed)


def _terminal(
    jobs: JobManager,
    metrics: Metrics,
    job: asyncio.Future[tuple[JobRecord, dict[str, Any]]],
    job_id: str,
    capture: RequestCapture,
    start: float,
) -> ev.Event:
    """The terminal event of a job that has ended, as ``GET /stream/{id}`` would give it; the
    metrics and the log count it as they count a sync invoke."""
    elapsed: float | None = time.perf_counter() - start
    record = jobs.local_record(job_id)
    try:
        record, outputs = job.result()
        outcome = Outcome.completed(jsonable(outputs), round((elapsed or 0) * 1000, 3))
    except (JobCancelled, asyncio.CancelledError):
        steps = [] if record is None else record.steps
        outcome = Outcome.cancelled([s["name"] for s in steps
                                     if s["status"] == StepStatus.COMPLETED])  # fmt: skip
        elapsed = None
        logger.info("Job %s (sync) was cancelled", job_id)
    except ZServeError as err:  # a step raised, the timeout, the store of a tracked run...
        log_job_failure(job_id, "sync", err)
        known = record.error if record is not None else None
        outcome = Outcome.failed(known or error_of(err))
    except Exception as exc:  # a bug of ours: the stream must still end
        logger.exception("Job %s failed unexpectedly", job_id)
        outcome = Outcome.failed({"reason": "error", "message": f"{type(exc).__name__}: {exc}"})
    metrics.record(outcome.metric, capture.mode, elapsed)
    data = outcome.event_data()
    data["run_id"] = None if record is None else record.run_id
    ended = record.finished_at if record is not None and record.finished_at else time.time()
    return ev.Event(ev.TERMINAL_EVENT[outcome.status], job_id, ended, None, data)
