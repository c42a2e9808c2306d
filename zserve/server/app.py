"""The FastAPI app that serves one deployment, and ``python -m zserve.server.app``.

``POST /invoke`` is a plain Starlette route on the hot path: the request body is parsed and
validated in one pass by a pydantic model compiled once, the plan runs, and the response is
serialised by pydantic-core. A FastAPI route with the same typed model documents it in
``/openapi.json``; it sits behind the Starlette route and would answer identically.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_json
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zserve._version import __version__
from zserve.broker import open_broker
from zserve.engine.deployment import DeploymentRecord
from zserve.engine.jobs import JobManager
from zserve.engine.plan import Plan
from zserve.errors import (
    CaptureNotSupported,
    ExecutionFailed,
    ExecutionTimeout,
    InvalidParameters,
    UsageError,
    ZServeError,
)
from zserve.server import problems
from zserve.server.metrics import Metrics
from zserve.server.middleware import AuthMiddleware, BodyLimitMiddleware
from zserve.settings import SETTINGS_ENV, Settings

__all__ = ["DEPLOYMENT_ENV", "app_from_env", "create_app", "main"]

DEPLOYMENT_ENV = "ZSERVE_DEPLOYMENT_JSON"
logger = logging.getLogger("zserve.server")


class Service:
    """Everything one worker needs to answer requests, built once at start."""

    def __init__(self, settings: Settings, record: DeploymentRecord, plan: Plan) -> None:
        self.settings = settings
        self.record = record
        self.plan = plan
        self.request_model = plan.request_model
        self.capture = plan.pipeline.capture or settings.capture_default
        self.metrics = Metrics()
        self.started = time.time()
        self.started_at = datetime.now(UTC).isoformat()
        self.ready = False
        self.draining = False
        self.jobs = JobManager(
            plan, open_broker(settings.broker_url or "memory://"), capture=self.capture,
            max_concurrency=settings.max_concurrency, max_queue=settings.max_queue,
            retention_s=settings.job_ttl_s, retention_count=settings.job_max_count,
            on_finished=lambda status, seconds: self.metrics.record(status, self.capture, seconds),
        )  # fmt: skip

    def parse(self, body: bytes | str) -> tuple[dict[str, Any], float | None]:
        """Validate an invoke body in one pass: (parameters, timeout_s)."""
        try:
            req = self.request_model.model_validate_json(body)
        except ValidationError as exc:
            self.metrics.record("invalid", self.capture, None)
            raise _request_error(exc) from None
        override = req.capture_override  # type: ignore[attr-defined]
        if override is not None and override.mode != "none":
            raise CaptureNotSupported(
                f"capture_override.mode={override.mode!r} is not supported yet: this server "
                "runs run-only; use 'none' or leave capture_override out"
            )
        timeout: float | None = req.timeout_s  # type: ignore[attr-defined]
        return dict(req.parameters), timeout or self.settings.timeout_s  # type: ignore[attr-defined]

    async def invoke(self, request: Request) -> Response:
        body = await request.body()
        mode = request.query_params.get("mode", "sync") if request.scope["query_string"] else "sync"
        if mode not in ("sync", "async"):
            raise UsageError(f"Unknown mode {mode!r}: use mode=sync (the default) or mode=async")
        params, timeout = self.parse(body)
        if mode == "async":
            job = await self.jobs.submit(params, timeout)
            links = {"job": f"/jobs/{job.job_id}", "stream": f"/stream/{job.job_id}"}
            accepted = {"job_id": job.job_id, "status": job.status, "links": links}
            return JSONResponse(accepted, status_code=202, headers={"Location": links["job"]})
        job_id = str(uuid.uuid4())
        start = time.perf_counter()
        try:
            _, outputs = await self.jobs.run_sync(params, timeout, job_id)
        except ExecutionFailed as err:
            elapsed = time.perf_counter() - start
            status = "timeout" if isinstance(err, ExecutionTimeout) else "failed"
            self.metrics.record(status, self.capture, elapsed)
            logger.error("Job %s failed: %s", job_id, err, exc_info=err.__cause__ or err)
            return problems.problem_from_error(err, job_id=job_id, run_id=None)
        elapsed = time.perf_counter() - start
        self.metrics.record("completed", self.capture, elapsed)
        doc = {
            "success": True,
            "outputs": outputs,
            "job_id": job_id,
            "run_id": None,
            "capture": self.capture,
            "execution_time_ms": round(elapsed * 1000, 3),
        }
        try:
            # NaN and infinities are not JSON: they are answered as null, as browsers do
            content = to_json(doc, inf_nan_mode="null")
        except PydanticSerializationError as exc:
            return _unserialisable(outputs, exc, job_id)
        return Response(content, media_type="application/json")

    def health(self, request: Request) -> Response:
        doc = {
            "status": "healthy" if self.ready else ("draining" if self.draining else "starting"),
            "deployment_id": self.record.id,
            "pipeline": self.plan.name,
            "uptime_s": round(time.time() - self.started, 3),
            "version": __version__,
        }
        return JSONResponse(doc, status_code=200 if self.ready else 503)

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
        }

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {
            "host": s.host,
            "port": s.port,
            "workers": s.workers,
            "capture_default": self.capture,
            "store": s.store_kind,
            "broker": self.jobs.broker.kind,
            "auth": bool(s.auth_key),
            "limits": {
                "max_body_bytes": s.max_body_bytes,
                "max_threads": s.max_threads,
                "max_concurrency": s.max_concurrency,
                "max_queue": s.max_queue,
                "timeout_s": s.timeout_s,
            },
            "log_level": s.log_level,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "version": __version__,
            "deployment_id": self.record.id,
        }


def _request_error(exc: ValidationError) -> UsageError:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return UsageError(
            "The request body is not valid JSON: send an object such as "
            '{"parameters": {...}} with Content-Type: application/json'
        )
    if any(e["type"] in ("model_type", "model_attributes_type") and not e["loc"] for e in errors):
        return UsageError('The request body must be a JSON object: {"parameters": {...}}')
    return InvalidParameters([{"loc": list(e["loc"]), "msg": e["msg"]} for e in errors])


def _unserialisable(outputs: dict[str, Any], exc: Exception, job_id: str) -> Response:
    bad = []
    for name, value in outputs.items():
        try:
            to_json(value)
        except PydanticSerializationError:
            bad.append(f"'{name}' ({type(value).__name__})")
    logger.error("Job %s: outputs %s cannot be encoded as JSON: %s", job_id, bad, exc)
    return problems.problem(
        500,
        f"Output {', '.join(bad) or '?'} cannot be encoded as JSON: return plain values "
        "(str, numbers, lists, dicts, pydantic models, dataclasses, datetimes)",
        type_=problems.PROBLEM_BASE + "unserialisable-output",
        title="Output cannot be encoded",
        job_id=job_id,
        run_id=None,
    )


def create_app(settings: Settings, record: DeploymentRecord, plan: Plan) -> FastAPI:
    service = Service(settings, record, plan)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from concurrent.futures import ThreadPoolExecutor

        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(settings.max_threads, thread_name_prefix="zserve-step")
        loop.set_default_executor(executor)
        await service.jobs.start()
        _drain_on_signals(service)
        service.ready = True
        try:
            yield
        finally:
            service.ready = False
            await service.jobs.shutdown(settings.grace_s)
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title=f"zserve: {plan.name}",
        version=__version__,
        description=f"Serves pipeline '{plan.name}' (deployment {record.ref}, {record.id}).",
        lifespan=lifespan,
    )
    app.state.service = service
    problems.install_handlers(app)
    app.router.routes.insert(0, Route("/invoke", service.invoke, methods=["POST"]))
    app.router.routes.insert(0, Route("/health", service.health, methods=["GET"]))
    _document_invoke(app, service)

    @app.get("/info", summary="Pipeline, steps, parameter schema and deployment")
    async def info() -> dict[str, Any]:
        return service.info()

    @app.get("/status", summary="Configuration snapshot (never secrets)")
    async def status() -> dict[str, Any]:
        return service.status()

    @app.get("/metrics", summary="Execution statistics (JSON, or Prometheus text)")
    async def metrics(request: Request) -> Response:
        wants_text = request.query_params.get("format") == "prometheus" or (
            "text/plain" in request.headers.get("accept", "")
        )
        if wants_text:
            from zserve.server.metrics import CONTENT_TYPE

            return Response(service.metrics.prometheus_text(), media_type=CONTENT_TYPE)
        summary = service.metrics.summary()
        summary["jobs"] = {
            "by_status": await service.jobs.count_by_status(),
            "note": "async jobs of every worker, sync jobs of the worker that answers",
        }
        return JSONResponse(summary)

    from zserve.server import streaming

    streaming.add_job_routes(app, service)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    if settings.auth_key:
        app.add_middleware(AuthMiddleware, key=settings.auth_key)
    return app


def _drain_on_signals(service: Service) -> None:
    """On SIGTERM or Ctrl-C, before uvicorn stops taking connections: /health answers 503 and
    the jobs start draining, so that open streams still receive their terminal events.

    uvicorn installs its own handlers while it serves (and restores the previous ones after);
    ours runs first and hands the signal on to uvicorn's once the jobs have drained (at most
    ``ZSERVE_GRACE_S``), so WebSocket streams are not closed under a running job. A second
    signal goes to uvicorn at once.
    """
    import threading

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
                drained = service.jobs.begin_drain(service.settings.grace_s)
                drained.add_done_callback(lambda _: then(signum, frame))

            loop.call_soon_threadsafe(start_drain)

        signal.signal(sig, handler)


def _document_invoke(app: FastAPI, service: Service) -> None:
    """Give ``/invoke`` its typed request model in /openapi.json.

    The Starlette route inserted first answers every request; this FastAPI route only exists so
    that FastAPI generates the documentation from the same pydantic model.
    """

    async def invoke(request: Request, body: Any) -> Response:
        return await service.invoke(request)

    # ``from __future__ import annotations`` makes annotations strings; give FastAPI the model.
    invoke.__annotations__["body"] = service.request_model

    app.post(
        "/invoke",
        summary=f"Run pipeline '{service.plan.name}'",
        responses={
            422: {"description": "Invalid parameters (problem+json)"},
            500: {"description": "A step raised (problem+json)"},
        },
    )(invoke)


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: everything comes from the environment."""
    from zserve.errors import SourceChanged
    from zserve.server.boot import check_sources, load_plan

    settings = Settings.from_json(os.environ[SETTINGS_ENV])
    record = DeploymentRecord.from_json(os.environ[DEPLOYMENT_ENV])
    try:
        check_sources(record)
    except SourceChanged as err:
        # A worker restarted by uvicorn's supervisor after the code changed on disk: serving
        # the new code beside the old would mix versions, and failing here would restart it
        # forever. Stop the whole server instead, saying why.
        print(f"Error: {err}; stopping the server", file=sys.stderr, flush=True)
        os.kill(os.getppid(), signal.SIGTERM)
        raise SystemExit(3) from None
    return create_app(settings, record, load_plan(record))


def main() -> None:
    """``python -m zserve.server.app``: serve the deployment named by the environment."""
    from zserve.registry import LOG_FILE_ENV, SERVER_ID_ENV
    from zserve.server.boot import serve

    try:
        # `zserve start --detach` hands over its resolved settings; otherwise the environment
        if SETTINGS_ENV in os.environ:
            settings = Settings.from_json(os.environ[SETTINGS_ENV])
        else:
            settings = Settings.from_env()
        code = serve(
            settings,
            server_id=os.environ.get(SERVER_ID_ENV),
            log_file=os.environ.get(LOG_FILE_ENV),
        )
    except ZServeError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    sys.exit(code)


if __name__ == "__main__":
    main()
