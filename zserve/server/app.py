"""The FastAPI app that serves one deployment (``create_app``).

``POST /invoke`` is the hot path: one route whose requests go straight to ``Service.invoke`` (a
plain Starlette endpoint: the body is parsed and validated in one pass by the pydantic model the
plan compiled once, the plan runs, pydantic-core writes the answer), and whose documentation in
``/openapi.json`` FastAPI generates from that same model.

``python -m zserve.server.app`` starts one server from the environment alone (``boot.main``).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Query
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response

from zserve._version import __version__
from zserve.engine.plan import Plan
from zserve.errors import ResourceFailed
from zserve.records import DeploymentRecord
from zserve.server import problems, protocol, runs, streaming
from zserve.server.dashboard import dashboard_routes
from zserve.server.front import InvokeFront
from zserve.server.guard import HostGuard, split_list
from zserve.server.logs import RequestIdMiddleware
from zserve.server.metrics import CONTENT_TYPE, FORMATS, OPENMETRICS_TYPE, negotiate
from zserve.server.middleware import (
    AuthMiddleware,
    BodyLimitMiddleware,
    GzipWhenAccepted,
    HeadMiddleware,
    InvokeShortcut,
)
from zserve.server.openapi import install_openapi
from zserve.server.probes import probe_routes
from zserve.server.service import Service
from zserve.server.tracing import TraceContextMiddleware
from zserve.settings import Settings

__all__ = ["create_app"]

#: FastAPI 0.165+ asks OpenTelemetry's global providers about every request (a few µs each);
#: zserve's spans are its own (zserve.server.tracing), so FastAPI's native telemetry is off.
NO_FASTAPI_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """A route FastAPI documents from ``endpoint``'s signature (its typed body model), while
    every request goes straight to ``handler(request)`` through Starlette's plain request
    wrapper: no dependency solving and no second parse of the body, which ``handler`` validates
    itself with the same model."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, handler: Handler,
                 **kwargs: Any) -> None:  # fmt: skip
        self.handler = handler
        super().__init__(path, endpoint, **kwargs)
        self.app = request_response(handler)

    def get_route_handler(self) -> Handler:
        return self.handler

    # Starlette's own matching and dispatch: FastAPI's add a look-up of included-router context
    # per request, which a route added straight to the app never has.
    matches = Route.matches
    handle = Route.handle


def create_app(
    settings: Settings,
    record: DeploymentRecord,
    plan: Plan,
    *,
    on_fatal: Callable[[ResourceFailed], None] | None = None,
) -> FastAPI:
    """The app of one worker. ``on_fatal``: called when a resource's factory fails (the
    server stops); without it, the worker answers 503 naming the failure."""
    service = Service(settings, record, plan)
    plan.on_batch = service.metrics.batch  # batch sizes and waits, when it has batched steps
    protocol.configure(settings.max_header_bytes, settings.max_headers,
                       settings.header_timeout_s, settings.max_connections)  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(settings.max_threads, thread_name_prefix="zserve-step")
        loop.set_default_executor(executor)
        await service.jobs.start()
        if service.capture != "none" or settings.run_ttl:
            service.writer.start()  # opens the store in its thread; the first request need not
        _drain_on_signals(service)
        if service.worker is None:
            service.ready = True
        else:  # /health answers 503 "starting" while the resources build
            service.begin_building(on_fatal)
        try:
            yield
        finally:
            service.ready = False
            await service.jobs.shutdown(settings.grace_s)
            # after the drain, and the batches its cancelled runs left (bounded): no run uses
            # a resource any more
            await service.close_worker(settings.grace_s)
            await loop.run_in_executor(executor, service.close_stores)
            if service.otel is not None:  # export the spans still buffered
                await loop.run_in_executor(executor, service.otel.shutdown)
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(  # /docs and /redoc from files in the package: no CDN
        title=f"zserve: {plan.name}",
        version=__version__,
        description=f"Serves pipeline '{plan.name}' (deployment {record.ref}, {record.id}).",
        lifespan=lifespan,
        **NO_FASTAPI_TELEMETRY,
    )
    app.state.service = service
    problems.install_handlers(app)
    install_openapi(app, auth=bool(settings.auth_key))
    # The hot routes first: routing tries routes in order.
    app.router.routes[:0] = [
        _invoke_route(service),
        Route("/health", service.health, methods=["GET"]),
        *probe_routes(service.host_id, lambda: service.phase),  # /livez, /readyz
    ]

    @app.get("/info", summary="Pipeline, steps, parameter schema and deployment")
    async def info() -> dict[str, Any]:
        return service.info()

    @app.get("/status", summary="Configuration snapshot (never secrets)")
    async def status() -> dict[str, Any]:
        return await service.status()

    @app.get(
        "/metrics",
        summary="Execution statistics (JSON, Prometheus text or OpenMetrics, by Accept)",
        responses={200: {"content": {t: {} for t in FORMATS.values()}}},  # errors: openapi.py
    )
    async def metrics(
        request: Request,
        format: Literal["json", "prometheus", "openmetrics"] | None = Query(
            None, description="Overrides `Accept`"
        ),
    ) -> Response:
        chosen = negotiate(request.query_params.get("format"), request.headers.get("accept"))
        if chosen == "prometheus":
            return Response(service.metrics.prometheus_text(), media_type=CONTENT_TYPE)
        if chosen == "openmetrics":
            text = service.metrics.openmetrics_text()
            return Response(text, media_type=OPENMETRICS_TYPE)
        summary = service.metrics.summary()
        summary["jobs"] = {
            "by_status": await service.jobs.count_by_status(),
            "note": "async jobs of every worker, sync jobs of the worker that answers",
        }
        return JSONResponse(summary)

    streaming.add_job_routes(app, service)
    runs.add_run_routes(app, service)
    if settings.ui:
        app.router.routes.extend(dashboard_routes())
    app.add_middleware(InvokeShortcut, handler=service.invoke)  # innermost
    if service.otel is not None:  # W3C trace context: installed only when tracing is on
        app.add_middleware(TraceContextMiddleware, tracing=service.otel)
    app.add_middleware(GzipWhenAccepted)
    app.add_middleware(HeadMiddleware, own=("/stream/", "/health", "/livez", "/readyz"))
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    if settings.auth_key and service.tokens is not None:  # the tokens the service issues
        app.add_middleware(AuthMiddleware, key=settings.auth_key, tokens=service.tokens)
    origins = split_list(settings.cors_origins)
    if origins:  # outside auth: a preflight carries no key
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "HEAD"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-Request-ID"],
            expose_headers=["Location", "Retry-After"], max_age=600,
        )  # fmt: skip
    allowed = split_list(settings.allowed_hosts)
    app.add_middleware(HostGuard, bind=settings.host, allowed=allowed, origins=origins)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer carries its id
    if service.otel is None:  # a traced request's span starts in the stack
        stack = app.build_middleware_stack()  # what Starlette would build on the first request
        guard = HostGuard(stack, bind=settings.host, allowed=allowed, origins=origins)
        app.middleware_stack = InvokeFront(
            stack, service.invoke, guard=guard, limit=settings.max_body_bytes,
            key=settings.auth_key or None, cors=bool(origins),
        )  # fmt: skip
    return app


def _invoke_route(service: Service) -> DirectRoute:
    """``POST /invoke``, documented with the plan's typed request model."""

    async def invoke(  # documents the route; never called
        body: Any,
        mode: Literal["sync", "async"] = Query(
            "sync", description="`async`: queue a job and answer 202 with its links"
        ),
    ) -> Response:
        raise NotImplementedError

    # ``from __future__ import annotations`` makes annotations strings; give FastAPI the model.
    invoke.__annotations__["body"] = service.plan.request_model
    return DirectRoute(
        "/invoke",
        invoke,
        handler=service.invoke,
        methods=["POST"],
        summary=f"Run pipeline '{service.plan.name}'",
        description="Sync by default; `?mode=async` queues a job and answers 202 at once; "
        "a sync invoke with `Accept: text/event-stream` answers with its events (SSE).",
        # the error answers (problem+json) and the 202 are added by zserve.server.openapi
    )


def _drain_on_signals(service: Service) -> None:
    """On SIGTERM or Ctrl-C, before uvicorn stops taking connections: /health answers 503 and
    the jobs start draining, so that open streams still receive their terminal events (on a
    broker many hosts share, the stream clients are sent to another host instead:
    ``server/handoff.py``).

    uvicorn installs its own handlers while it serves (and restores the previous ones after);
    ours runs first and hands the signal on to uvicorn's once the jobs have drained (at most
    ``ZSERVE_GRACE_S``), so WebSocket streams are not closed under a running job. A second
    signal goes to uvicorn at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # an in-process test client: no signals to watch
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        uvicorn_handler = signal.getsignal(sig)
        if not callable(uvicorn_handler):
            continue

        def handler(signum: int, frame: Any, then: Any = uvicorn_handler) -> None:
            if service.draining:  # a second signal: let uvicorn stop now
                then(signum, frame)
                return
            service.ready, service.draining = False, True

            def start_drain() -> None:
                service.handoff.begin()  # streams go to another host, when there are others
                drained = service.jobs.begin_drain(service.settings.grace_s)
                drained.add_done_callback(lambda _: then(signum, frame))

            loop.call_soon_threadsafe(start_drain)

        signal.signal(sig, handler)


if __name__ == "__main__":
    from zserve.server.boot import main

    main()
