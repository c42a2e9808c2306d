"""``Service``: everything one worker needs to answer requests, built once at start, and the
handlers of the hot routes (``/invoke``, ``/health``) as plain Starlette endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticSerializationError, to_json
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from zserve._version import __version__
from zserve.broker import open_broker
from zserve.engine.batching import describe_batching
from zserve.engine.capture import RequestCapture
from zserve.engine.plan import Plan
from zserve.engine.tracking import Tracking
from zserve.engine.values import success_body
from zserve.engine.worker import Worker
from zserve.errors import (
    ExecutionFailed,
    ExecutionTimeout,
    Overloaded,
    ResourceFailed,
    ServerStarting,
    StoreUnavailable,
    UnsupportedMediaType,
    UsageError,
)
from zserve.jobs import JobManager
from zserve.jobs.once import submit_once
from zserve.jobs.outcome import log_job_failure
from zserve.records import DeploymentRecord, JobStatus, new_job_id
from zserve.server import problems, tracing
from zserve.server.answers import ASK_TIMING, JSONBytes, server_timing, unserialisable
from zserve.server.guard import is_json
from zserve.server.handoff import Handoff
from zserve.server.idempotency import REPLAYED, fingerprinted, key_in
from zserve.server.invoke_stream import FEATURE, InvokeStreams, wants_events
from zserve.server.metrics import Metrics
from zserve.server.probes import StoreReach
from zserve.server.tokens import StreamTokens
from zserve.server.writer import RETRY_S, RunStore, RunWriter
from zserve.settings import Settings, default_host_id, hide_password, parse_duration

if TYPE_CHECKING:
    from zserve.store import Store

__all__ = ["Service"]

logger = logging.getLogger("zserve.server")

# Looked up once: an enum member lookup costs ~45 ns on Python 3.11 (the sync hot path).
_COMPLETED = JobStatus.COMPLETED.value


class Service:
    """Everything one worker needs to answer requests, built once at start."""

    def __init__(self, settings: Settings, record: DeploymentRecord, plan: Plan) -> None:
        self.settings = settings
        #: this host's name among several (``boot.serve`` sets it once the port is bound)
        self.host_id = settings.host_id or default_host_id(settings.port)
        self.record = record
        self.plan = plan
        plan.adaptive = settings.adaptive_steps
        self.tracking = Tracking.from_settings(settings, plan, record.id, record.capture_default)
        #: The capture mode of a request that does not override it.
        self.capture = self.tracking.usual.mode
        self._usual = self.tracking.usual
        self.metrics = Metrics([b.step for b in plan.batchers])
        #: Stream tokens for browsers, when the server has an auth key.
        self.tokens = StreamTokens(settings.auth_key) if settings.auth_key else None
        flush = plan.capture_flush or settings.capture_flush
        self._reader: Store | None = None
        self._reader_lock = threading.Lock()
        self.writer = RunWriter(
            self._open_store, flush=flush, max_queue=settings.capture_queue,
            on_commit=self.metrics.runs_committed, on_drop=self.metrics.run_dropped,
            ttl_s=parse_duration(settings.run_ttl) if settings.run_ttl else None,
            deployment_id=record.id,
            # a store server that restarts is waited for; a SQLite file that fails is not
            retry_s=0.0 if settings.store_url.startswith("sqlite") else RETRY_S,
        )  # fmt: skip
        self.started = time.time()
        self.started_at = datetime.now(UTC).isoformat()
        self.ready = False
        self.draining = False
        #: the plan's resources in this process (None: it has none, and the worker is ready as
        #: soon as it starts)
        self.worker = Worker(plan) if plan.resources else None
        #: while the resources build: requests are refused (503 with Retry-After)
        self.starting = False
        #: a resource that failed to build (the server stops; `zserve dev` answers 503)
        self.failed: ResourceFailed | None = None
        self._building: asyncio.Task[None] | None = None
        #: OpenTelemetry spans of jobs and steps: None unless an OTLP endpoint is set
        self.otel = tracing.setup(settings, record)
        broker = open_broker(settings.broker_url or "memory://", job_ttl_s=settings.job_ttl_s)
        self.jobs = JobManager(
            plan, broker, tracking=self.tracking,
            write_run=self.writer.write, store_failing=lambda: self.writer.failing,
            max_concurrency=settings.max_concurrency, max_queue=settings.max_queue,
            retention_s=settings.job_ttl_s, retention_count=settings.job_max_count,
            on_finished=lambda status, seconds: self.metrics.record(status, self.capture, seconds),
            observer_for=self.otel.observer_for if self.otel is not None else None,
        )  # fmt: skip
        self.streams = InvokeStreams(self.jobs, self.metrics, settings.sse_ping_s)  # and attachers
        #: a draining host's stream clients resume on another host (Redis: many hosts)
        self.handoff = Handoff(broker.multi_host)
        self.store_reach = StoreReach(settings.store_url, self.writer)  # for /status

    def begin_building(self, on_fatal: Callable[[ResourceFailed], None] | None) -> None:
        """Build the resources in the background: ``/health`` answers 503 "starting" and runs
        are refused until they are built; then the worker is ready. ``on_fatal`` hears a
        factory that failed (the server stops)."""
        assert self.worker is not None
        worker, self.starting = self.worker, True

        async def build() -> None:
            try:
                await worker.start()
            except ResourceFailed as err:
                logger.error("%s", err, exc_info=err.__cause__)  # the factory's traceback
                self.failed = err
                if on_fatal is not None:
                    on_fatal(err)
                return
            self.starting = False
            self.ready = not self.draining

        self._building = asyncio.ensure_future(build())

    async def close_worker(self, grace_s: float) -> None:
        """Stop a build under way, wait (up to ``grace_s``) for the batches still running (a
        cancelled run leaves its batch running), then tear the resources down (after the
        jobs' drain)."""
        if self._building is not None and not self._building.done():
            self._building.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._building
        deadline = time.monotonic() + grace_s
        while any(b.running for b in self.plan.batchers) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.worker is not None:
            await self.worker.aclose()

    def not_started(self) -> ResourceFailed | ServerStarting:
        """Why a run is refused while the worker starts (``starting``)."""
        if self.failed is not None:
            return ResourceFailed(str(self.failed))
        assert self.worker is not None
        building = [name for name, state in self.worker.states().items() if state != "ready"]
        return ServerStarting(
            f"The server is starting: resource(s) {', '.join(map(repr, building))} still being "
            "built; retry in a moment"
        )

    def run_reader(self) -> Store:
        """The store, for reading runs back (``/runs``): opened on first use, from a thread."""
        with self._reader_lock:
            if self._reader is None:
                from zserve.store import Store

                s = self.settings
                self._reader = Store(s.store_url, artifact_dir=s.artifact_dir,
                                     migrate=s.store_migrate)  # fmt: skip
            return self._reader

    def close_stores(self) -> None:
        """Write what is queued, then close the store (blocks: call it off the event loop)."""
        self.writer.close(self.settings.grace_s + 5)
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _open_store(self) -> RunStore:
        """The store of recorded runs, opened by the writer's thread on first use: a run-only
        worker never imports SQLAlchemy."""
        from zserve.store import Store

        s = self.settings
        return Store(s.store_url, artifact_dir=s.artifact_dir, migrate=s.store_migrate)

    def parse(self, body: bytes | str) -> tuple[dict[str, Any], float | None, RequestCapture]:
        """Validate an invoke body in one pass: (parameters, timeout_s, capture)."""
        try:
            req = self.plan.parse_request(body)
            override = req.capture_override
            capture = self._usual if override is None else self.tracking.request(override)
        except UsageError:
            self.metrics.record("invalid", self.capture, None)
            raise
        # the fields, as dict(model) gives them (extra="forbid": there are no others) but cheaper
        params = req.parameters.__dict__.copy()
        return params, req.timeout_s or self.settings.timeout_s, capture

    async def invoke(self, request: Request) -> Response:
        if self.starting:  # the one test this path pays for resources
            raise self.not_started()
        if not is_json(request.scope):  # what a page on another site can send unasked
            self.metrics.record("invalid", self.capture, None)
            raise UnsupportedMediaType(
                "POST /invoke takes a JSON body: send it with 'Content-Type: application/json'"
            )
        body = await _body(request.receive)
        mode = request.query_params.get("mode", "sync") if request.scope["query_string"] else "sync"
        if mode not in ("sync", "async"):
            raise UsageError(f"Unknown mode {mode!r}: use mode=sync (the default) or mode=async")
        key = key_in(request.scope["headers"])  # a malformed one is refused, sync or not
        params, timeout, capture = self.parse(body)
        if mode == "async":
            idempotency = fingerprinted(key, mode, body)
            try:
                if idempotency is None:
                    job, replayed = await self.jobs.submit(params, timeout, capture=capture), False
                else:
                    job, replayed = await submit_once(self.jobs, idempotency, params, timeout,
                                                      capture=capture)  # fmt: skip
            except Overloaded:
                self.metrics.record("rejected", capture.mode, None)
                raise
            links = {"job": f"/jobs/{job.job_id}", "stream": f"/stream/{job.job_id}"}
            if self.tokens is not None:  # for a browser: EventSource sends no Authorization
                token, _ = self.tokens.issue(job.job_id)
                links["stream_token"] = f"/stream/{job.job_id}?token={token}"
            accepted = {"job_id": job.job_id, "status": job.status, "capture": job.capture,
                        "links": links}  # fmt: skip
            if job.capture_requested is not None:
                accepted["capture_requested"] = job.capture_requested
            headers = {"Location": links["job"]}
            if replayed:  # the job of an earlier request with the same Idempotency-Key
                headers[REPLAYED] = "true"
            return JSONResponse(accepted, status_code=202, headers=headers)
        if wants_events(request.scope["headers"]):  # Accept: text/event-stream
            return await self.streams.start(params, timeout, capture)
        job_id = new_job_id()
        start = time.perf_counter()
        try:
            job, outputs = await self.jobs.run_sync(
                params, timeout, job_id, capture, partial(_disconnected, request.receive)
            )
        except Overloaded:
            self.metrics.record("rejected", capture.mode, None)
            raise
        except (ExecutionFailed, StoreUnavailable) as err:
            elapsed = time.perf_counter() - start
            status = "timeout" if isinstance(err, ExecutionTimeout) else JobStatus.FAILED
            self.metrics.record(status, capture.mode, elapsed)
            log_job_failure(job_id, "sync", err)
            failed = self.jobs.local_record(job_id)
            run_id = failed.run_id if failed is not None else None
            return problems.problem_from_error(err, job_id=job_id, run_id=run_id)
        elapsed = time.perf_counter() - start
        self.metrics.record(_COMPLETED, capture.mode, elapsed)
        try:
            # NaN and infinities are not JSON: they are answered as null, as browsers do
            body_doc = success_body(outputs, job_id, capture.mode, elapsed, job.run_id,
                                    job.capture_requested)  # fmt: skip
            content = to_json(body_doc, inf_nan_mode="null")
        except PydanticSerializationError as exc:
            return unserialisable(outputs, exc, job_id)
        if self.settings.server_timing or ASK_TIMING in request.scope["headers"]:
            return JSONBytes(content, server_timing(elapsed, job.steps))
        return JSONBytes(content)

    @property
    def phase(self) -> str:
        """``ready``, or why not: ``draining``, ``failed`` or ``starting`` (``/readyz``)."""
        if self.ready:
            return "ready"
        return "draining" if self.draining else "failed" if self.failed else "starting"

    def health(self, request: Request) -> Response:
        trouble = self.problems()
        state = ("degraded" if trouble else "healthy") if self.ready else self.phase
        doc: dict[str, Any] = {
            "status": state,
            "problems": trouble,
            "deployment_id": self.record.id,
            "pipeline": self.plan.name,
            "uptime_s": round(time.time() - self.started, 3),
            "version": __version__,
        }
        if self.worker is not None:
            doc["resources"] = self.worker.states()
            if self.failed is not None:
                doc["error"] = str(self.failed)
        return JSONResponse(doc, status_code=200 if self.ready else 503)

    def problems(self) -> dict[str, str]:
        """What cannot be written just now (a full disk...): async and streamed jobs are
        refused while the broker cannot, tracked requests while the store cannot."""
        found = {"broker": self.jobs.broker.problem, "store": self.writer.failing}
        return {part: why for part, why in found.items() if why}

    def info(self) -> dict[str, Any]:
        spec = self.plan.spec
        return {
            "pipeline": self.plan.name,
            "steps": spec["steps"],
            "parameters": spec["parameters"],
            "parameters_json_schema": spec["parameters_json_schema"],
            "outputs": spec["outputs"],
            "execution": spec["execution"],
            "deployment": {
                "id": self.record.id,
                "name": self.record.name,
                "version": self.record.version,
                "source": self.record.source,
                "created_at": self.record.created_at,
            },
            "capture_default": self.capture,
            # what this server does beyond the HTTP API of earlier versions (clients ask here)
            "features": [FEATURE],
        }

    async def status(self) -> dict[str, Any]:
        s = self.settings
        broker = self.jobs.broker
        return {
            "host_id": self.host_id,
            "host": s.host,
            "port": s.port,
            "workers": s.workers,
            "capture_default": self.capture,
            "capture": {
                "max": s.capture_max,
                "create_runs": s.create_runs,
                "sample_rate": s.sample_rate,
                "flush": self.writer.flush,
                "artifact_max_bytes": s.artifact_max_bytes,
                "run_ttl": s.run_ttl or None,
                "store_failing": self.writer.failing,
            },
            # reachable: the broker's own verdict; the run writer's, else a read (StoreReach)
            # the URLs as hide_password shows them: never a password
            "store": {
                "kind": s.store_kind,
                "url": hide_password(s.store_url),
                **await self.store_reach.state(),
            },
            "broker": {
                "kind": broker.kind,
                "url": hide_password(s.broker_url or "memory://"),
                "reachable": not broker.problem,
                "problem": broker.problem,
            },
            "broker_problem": broker.problem,
            "jobs": {"ttl_s": s.job_ttl_s, "max_count": s.job_max_count},
            "auth": bool(s.auth_key),
            "limits": {
                "max_body_bytes": s.max_body_bytes,
                "max_threads": s.max_threads,
                "max_concurrency": s.max_concurrency,
                "max_queue": s.max_queue,
                "timeout_s": s.timeout_s,
            },
            "batching": describe_batching(self.plan.batchers),
            "log_level": s.log_level,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started, 3),
            "version": __version__,
            "deployment_id": self.record.id,
            "resources": [] if self.worker is None else self.worker.status(),
        }


async def _body(receive: Receive) -> bytes:
    """The request's body (Starlette's ``Request.body()`` without its stream generator)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone. The body is read already, so the server's next message
    is the disconnect; anything else (a test harness repeating the body) means it stays."""
    if (await receive())["type"] != "http.disconnect":
        await asyncio.get_running_loop().create_future()  # until cancelled
