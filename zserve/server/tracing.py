"""OpenTelemetry spans for jobs and steps, and the W3C trace context of requests.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set:
then nothing here is installed and opentelemetry is never imported. When set, ``setup`` gives the
worker a ``TracerProvider`` of its own (the global one is left alone) exporting over OTLP/HTTP in
batches (the exporter and ``BatchSpanProcessor`` read the standard ``OTEL_*`` variables);
without the ``otel`` extra it logs one warning and tracing stays off.

Every job is a span ``zserve.job`` (kind SERVER when it answers its request, CONSUMER when it
runs after the answer: async and streamed jobs), and each of its steps a child span
``zserve.step <name>``. ``TraceContextMiddleware`` keeps a request's valid ``traceparent`` (and
``tracestate``) for the jobs it starts, which inherit it: their span continues the caller's
trace (an invalid one is ignored: a new trace). Passed on: an answer's ``traceparent`` header
(also on a WebSocket handshake) names the job span when the job ran during the request (sync
``POST /invoke``); an async job's span starts after the 202 is sent, so that answer, like every
other, echoes the request's own ``traceparent`` (none without one). A job's trace is found by
the caller's trace id, or by the span attribute ``zserve.job_id``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zserve.engine.observer import Observer
from zserve.server.logs import REQUEST_ID

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span

    from zserve.engine.context import RunContext
    from zserve.records import DeploymentRecord, JobRecord
    from zserve.settings import Settings

__all__ = ["SpanObserver", "TraceContextMiddleware", "Tracing", "setup"]

logger = logging.getLogger("zserve.server")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class Incoming:
    """A request's trace context: the caller's (None without a valid ``traceparent``), and the
    ``traceparent`` of the job span that ran in the request, if one did (for the answer)."""

    __slots__ = ("answer", "echo", "parent")

    def __init__(self, parent: Context | None = None, echo: bytes | None = None) -> None:
        self.parent, self.echo = parent, echo
        self.answer: bytes | None = None


#: The trace context of the request being served (None outside one, or with tracing off).
INCOMING: contextvars.ContextVar[Incoming | None] = contextvars.ContextVar(
    "zserve_trace_context", default=None
)


def _traceparent(trace_id: int, span_id: int, flags: int) -> bytes:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}".encode()


def setup(
    settings: Settings, record: DeploymentRecord, processor: SpanProcessor | None = None
) -> Tracing | None:
    """This worker's tracing: None when no OTLP endpoint is set (and no ``processor`` is given,
    as tests do), or when the OpenTelemetry SDK is not installed."""
    if processor is None and not any(os.environ.get(var) for var in ENDPOINT_VARS):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if processor is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processor = BatchSpanProcessor(OTLPSpanExporter())
    except ImportError as exc:
        logger.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is missing (%s): no "
            "traces are exported; install it with: pip install 'zserve[otel]'", exc.name
        )  # fmt: skip
        return None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create
    resource = Resource.create({
        "zserve.deployment.id": record.id, "zserve.deployment.name": record.name,
        "zserve.deployment.version": record.version, "zserve.pipeline": record.pipeline_name,
        "zserve.workers": settings.workers, "process.pid": os.getpid(),
    })  # fmt: skip
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": f"zserve-{record.name}"}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return Tracing(provider, record)


class Tracing:
    """A worker's tracer: one ``SpanObserver`` per job, and the requests' trace context."""

    def __init__(self, provider: TracerProvider, record: DeploymentRecord) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from zserve._version import __version__

        self.provider = provider
        self.tracer = provider.get_tracer("zserve", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.attributes = {"zserve.pipeline": record.pipeline_name,
                           "zserve.deployment.id": record.id}  # fmt: skip
        self._closed = False

    def observer_for(self, record: JobRecord) -> Observer:
        """The ``JobManager`` hook: called in the task that runs the job."""
        return SpanObserver(self, record, INCOMING.get())

    def incoming(self, headers: list[tuple[bytes, bytes]]) -> Incoming:
        """A request's trace context, from its ``traceparent`` and ``tracestate`` headers."""
        found: dict[str, list[str]] = {}
        for name, value in headers:
            if name in (b"traceparent", b"tracestate"):
                found.setdefault(name.decode(), []).append(value.decode("latin-1"))
        if "traceparent" not in found:
            return Incoming()
        from opentelemetry import trace

        # tracestate headers join as one list; two traceparent headers make an invalid one
        parent = self.propagator.extract({k: ",".join(v) for k, v in found.items()})
        sc = trace.get_current_span(parent).get_span_context()
        if not sc.is_valid:
            return Incoming()
        return Incoming(parent, _traceparent(sc.trace_id, sc.span_id, sc.trace_flags))

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Export what is buffered, then stop; gives up after ``timeout_s`` (the SDK's own
        flush does not keep to its timeout when a collector hangs). Blocks: call it off the
        event loop."""
        if self._closed:
            return
        self._closed = True
        done = threading.Thread(target=self._shutdown, name="zserve-otel-stop", daemon=True)
        done.start()
        done.join(timeout_s)
        if done.is_alive():
            logger.warning("Tracing: the last spans were not exported within %g s", timeout_s)

    def _shutdown(self) -> None:
        try:
            self.provider.shutdown()  # exports what the batch processor holds
        except Exception:
            logger.warning("Tracing: the last spans could not be exported", exc_info=True)


class SpanObserver(Observer):
    """One job's spans. Hooks may come from worker threads (sync steps) and in parallel
    (fan-out): step spans are kept under a lock and always started with the job span as their
    explicit parent. Nothing here raises: a failure is logged once per job."""

    def __init__(self, tracing: Tracing, record: JobRecord, incoming: Incoming | None) -> None:
        self.tracing, self.record, self.incoming = tracing, record, incoming
        self.job: Span | None = None
        self.job_context: Context | None = None
        self.steps: dict[str, Span] = {}
        self.lock = threading.Lock()
        self.failed = False

    def _failure(self, hook: str) -> None:
        if not self.failed:
            self.failed = True
            logger.warning("Tracing job %s: %s failed", self.record.job_id, hook, exc_info=True)

    def run_started(self, ctx: RunContext) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.context import Context

            record, incoming = self.record, self.incoming
            attributes: dict[str, Any] = {
                **self.tracing.attributes, "zserve.job_id": record.job_id,
                "zserve.job.mode": record.mode, "zserve.capture": record.capture,
            }  # fmt: skip
            if ctx.run_id is not None:
                attributes["zserve.run_id"] = ctx.run_id
            if (request_id := REQUEST_ID.get()) is not None:
                attributes["zserve.request_id"] = request_id
            sync = record.mode == "sync"
            parent = incoming.parent if incoming is not None else None
            self.job = self.tracing.tracer.start_span(
                "zserve.job", context=parent if parent is not None else Context(),
                kind=trace.SpanKind.SERVER if sync else trace.SpanKind.CONSUMER,
                attributes=attributes,
            )  # fmt: skip
            self.job_context = trace.set_span_in_context(self.job)
            if sync and incoming is not None:  # the answer is sent after the job: it names it
                sc = self.job.get_span_context()
                incoming.answer = _traceparent(sc.trace_id, sc.span_id, sc.trace_flags)
        except Exception:
            self._failure("run_started")

    def step_started(self, step: str) -> None:
        if self.job_context is None:
            return
        try:
            span = self.tracing.tracer.start_span(
                f"zserve.step {step}", context=self.job_context,
                attributes={"zserve.step": step, "zserve.job_id": self.record.job_id},
            )  # fmt: skip
            with self.lock:
                self.steps[step] = span
        except Exception:
            self._failure("step_started")

    def step_finished(self, step: str, seconds: float, error: BaseException | None) -> None:
        with self.lock:
            span = self.steps.pop(step, None)
        if span is None:
            return
        try:
            if error is not None:
                _fail(span, error)
            span.end()
        except Exception:
            self._failure("step_finished")

    def run_finished(
        self, ctx: RunContext, outputs: dict[str, Any] | None, error: BaseException | None
    ) -> None:
        job = self.job
        if job is None:
            return
        try:
            if ctx.run_id is not None:
                job.set_attribute("zserve.run_id", ctx.run_id)
            if error is None:
                job.set_attribute("zserve.job.status", "completed")
            else:
                cancelled = isinstance(error, asyncio.CancelledError)
                job.set_attribute("zserve.job.status", "cancelled" if cancelled else "failed")
                _fail(job, error, record=False)
            job.end()
        except Exception:
            self._failure("run_finished")


def _fail(span: Span, error: BaseException, record: bool = True) -> None:
    """ERROR status: ``cancelled`` for a cancellation, else the error (and, if ``record``, an
    exception event with its traceback)."""
    from opentelemetry.trace import Status, StatusCode

    if isinstance(error, asyncio.CancelledError):
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        return
    span.set_attribute("error.type", type(error).__name__)
    if record:
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))


class TraceContextMiddleware:
    """Pure ASGI, installed only when tracing is on: the request's trace context in ``INCOMING``
    for the jobs it starts, and ``traceparent`` on the answer (or the WebSocket handshake)."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app, self.tracing = app, tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = self.tracing.incoming(scope["headers"])
        token = INCOMING.set(incoming)

        async def send_with_trace(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                value = incoming.answer or incoming.echo
                if value is not None:
                    message["headers"] = [*(message.get("headers") or ()), (b"traceparent", value)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        finally:
            INCOMING.reset(token)
