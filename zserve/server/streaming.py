"""Jobs over HTTP: ``/jobs``, ``/jobs/{id}``, ``/jobs/{id}/cancel``, the SSE stream
``/stream/{id}`` and the WebSocket ``/stream``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, WebSocket, WebSocketDisconnect
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from zserve.errors import BrokerUnavailable, NotFound, Unauthorized, UsageError, ZServeError
from zserve.events import Event
from zserve.jobs.once import submit_once
from zserve.pages import MAX_PAGE, cursor_of, position_of
from zserve.records import JobStatus, iso
from zserve.server.handoff import HANDOFF, HANDOFF_REASON, HandedOff
from zserve.server.idempotency import fingerprinted, key_in
from zserve.server.problems import close_reason
from zserve.server.sse import PING, SSE_HEADERS, SSE_RETRY, sse

if TYPE_CHECKING:
    from zserve.server.service import Service

__all__ = ["add_job_routes"]

logger = logging.getLogger("zserve.server")


#: The end of an SSE stream whose broker stopped answering (Redis unreachable): no event, a
#: comment saying why, and the retry delay of a 503's ``Retry-After``.
BROKER_AWAY = b": the job broker does not answer: reconnect with Last-Event-ID\nretry: 2000\n\n"


def follow(
    service: Service, job_id: str, after: int, finished: bool = False
) -> AsyncIterator[Event | None]:
    """The job's events after ``after`` up to the terminal one; None for a keep-alive: from
    this worker's feed of a streamed invocation (``server/feeds.py``), else from the broker.
    Following an unfinished broker job raises ``HandedOff`` once this host hands its stream
    clients over to another (``server/handoff.py``)."""
    feed = service.streams.feed(job_id)
    if feed is not None:
        return feed.follow(after, service.settings.sse_ping_s)
    events = service.jobs.follow(job_id, after, service.settings.sse_ping_s)
    return events if finished else service.handoff.until(events)


async def _attachable(service: Service, job_id: str) -> bool:
    """Whether the job's events can be followed here and it has ended (NotFound if they
    cannot): a streamed invocation of this worker, or a job of the broker."""
    feed = service.streams.feed(job_id)
    if feed is not None:
        return feed.ended
    job = await service.jobs.get(job_id)
    if job.mode == "sync":
        raise NotFound(
            f"Job {job_id} was a sync invoke: its events are not kept. Only a sync invoke sent "
            "with 'Accept: text/event-stream' can be followed here, on the worker that runs it, "
            "while it runs and a while after. Use POST /invoke?mode=async (or `zserve invoke "
            "--stream`) to follow a job"
        )
    return job.finished


def add_job_routes(app: FastAPI, service: Service) -> None:
    jobs = service.jobs

    @app.get("/jobs", summary="Jobs, newest first, a page at a time (no outputs)")
    async def list_jobs(
        status: JobStatus | None = Query(None),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        cursor: str | None = Query(None, description="The `next` of the previous page"),
        prefix: str | None = Query(
            None,
            min_length=1,
            max_length=36,
            description="Only the jobs whose id starts with this (`GET /jobs/{id}` is exact)",
        ),
    ) -> dict[str, Any]:
        before = None if cursor is None else position_of(cursor)
        found = await jobs.list_jobs(status, limit + 1, before, prefix)
        page: dict[str, Any] = {"jobs": [j.to_dict() for j in found[:limit]], "next": None}
        if len(found) > limit:
            page["next"] = cursor_of(found[limit - 1].created_at, found[limit - 1].job_id)
        return page

    @app.get("/jobs/{job_id}", summary="One job: state, steps, outputs or error")
    async def get_job(job_id: str) -> dict[str, Any]:
        return (await jobs.get(job_id)).to_dict()

    @app.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
    async def cancel_job(job_id: str) -> dict[str, Any]:
        job = await jobs.cancel(job_id)
        return {"job_id": job.job_id, "status": job.status}

    @app.post("/jobs/{job_id}/token", summary="A short-lived token to stream one job (browsers)")
    async def stream_token(job_id: str) -> dict[str, Any]:
        if service.tokens is None:
            raise UsageError(
                "This server has no auth key (ZSERVE_AUTH_KEY): its streams need no token"
            )
        await _attachable(service, job_id)
        token, expires = service.tokens.issue(job_id)
        return {"job_id": job_id, "token": token, "expires_at": iso(expires),
                "stream": f"/stream/{job_id}?token={token}"}  # fmt: skip

    @app.get(
        "/stream/{job_id}",
        summary="Server-Sent Events of a job (Last-Event-ID resumes)",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "The job's events"},
            204: {"description": "The job has ended and its last event was delivered already"},
        },
    )
    async def stream(job_id: str, request: Request) -> Response:
        finished = await _attachable(service, job_id)
        after = _sequence(request.headers.get("last-event-id", "0").strip() or "0", "Last-Event-ID")
        events = follow(service, job_id, after, finished)
        first: Event | None = None
        if finished:  # all there is to send is stored: nothing left ends it with a 204
            first = await anext(events, None)
            if first is None:  # stops an EventSource from reconnecting for ever
                return Response(status_code=204, headers=SSE_HEADERS)
        if request.method == "HEAD":
            return Response(media_type="text/event-stream", headers=SSE_HEADERS)

        async def body() -> AsyncIterator[bytes]:
            retry = SSE_RETRY
            if first is not None:
                yield retry + sse(first)
                retry = b""
            try:
                async for event in events:
                    if event is None:
                        yield PING
                    else:
                        yield retry + sse(event)
                        retry = b""
            except HandedOff:  # this host stops: the client resumes on another
                yield HANDOFF
            except BrokerUnavailable:  # for now: the client resumes once it answers again
                yield BROKER_AWAY

        # a draining host's connections close after their answer (``server/handoff.py``)
        headers = {**SSE_HEADERS, "Connection": "close"} if service.handoff.begun else SSE_HEADERS
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    # HEAD answers as the GET would begin, without following the job
    app.add_api_route("/stream/{job_id}", stream, methods=["HEAD"], include_in_schema=False)

    @app.websocket("/stream")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        # a client that goes away leaves the job running; it reattaches with {"job_id": ...}
        with contextlib.suppress(WebSocketDisconnect):
            await _websocket(service, ws)


async def _websocket(service: Service, ws: WebSocket) -> None:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return
    text = message.get("text")
    if text is None:
        await _refuse(
            ws, 1003, UsageError('Send a JSON text frame: an invoke body or {"job_id": ...}')
        )
        return
    doc = _json_object(text)
    if doc is None:
        await _refuse(ws, 1003, UsageError("The message is not a JSON object"))
        return
    token = ws.scope.get("zserve.stream_token")
    if token is not None and not (
        "job_id" in doc and service.tokens and service.tokens.valid(token, str(doc["job_id"]))
    ):
        await _refuse(ws, 1008, Unauthorized(
            "A stream token only attaches to its own job: send {\"job_id\": ...} of the job "
            "it was issued for, or authenticate with 'Authorization: Bearer <key>'"
        ))  # fmt: skip
        return
    finished = False
    try:
        if "job_id" in doc:
            job_id = str(doc["job_id"])
            finished = await _attachable(service, job_id)
            after = _sequence(doc.get("after", 0), '"after"')
        else:
            if service.starting:
                raise service.not_started()
            params, timeout, capture = service.parse(text)
            idempotency = fingerprinted(key_in(ws.scope["headers"]), "stream", text)
            if idempotency is None:
                job = await service.jobs.submit(params, timeout, mode="stream", capture=capture)
            else:  # a retried stream follows the first job's events from the start
                job, _ = await submit_once(service.jobs, idempotency, params, timeout,
                                           mode="stream", capture=capture)  # fmt: skip
            job_id = job.job_id
            after = 0
    except ZServeError as err:
        # a host handing its clients over refuses new jobs: 1012, as to go to another host
        handed_off = service.handoff.begun and err.http_status == 503
        await _refuse(ws, 1012 if handed_off else 1008, err)
        return

    async def listen() -> None:
        """The client may cancel the job while it streams."""
        while True:
            incoming = await ws.receive()
            if incoming["type"] == "websocket.disconnect":
                return
            action = _json_object(incoming.get("text") or "null")
            if action is not None and action.get("action") == "cancel":
                with contextlib.suppress(ZServeError):
                    await service.jobs.cancel(job_id)
            else:
                err = UsageError('Only {"action": "cancel"} can be sent while a job streams')
                await ws.send_json({"event": "error", **err.to_problem()})

    listener = asyncio.ensure_future(listen())
    try:
        async for event in follow(service, job_id, after, finished):
            if listener.done():  # the client went away: the job goes on without it
                return
            if event is not None:
                await ws.send_text(event.to_json())
        await ws.close(1000)
    except HandedOff:  # this host stops: the client reattaches on another (1012: restart)
        await ws.close(1012, HANDOFF_REASON)
    except BrokerUnavailable as err:  # 1013: try again later (reattach with "after")
        await ws.close(1013, err.message[:120])
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener


def _sequence(value: Any, what: str) -> int:
    """An event sequence number from a client: a whole number >= 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 16:
        number = int(value)
    else:
        raise UsageError(f"{what} {value!r} is not an event sequence number (0, 1, 2, ...)")
    if not 0 <= number < 2**53:
        raise UsageError(f"{what} {value!r} is not an event sequence number (0, 1, 2, ...)")
    return number


def _json_object(text: str) -> dict[str, Any] | None:
    """A message as a JSON object, or None (not JSON, not an object, or nested too deep)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


async def _refuse(ws: WebSocket, code: int, err: ZServeError) -> None:
    """An error frame (a problem document: ``status`` is an HTTP status, ``code`` the
    WebSocket close code that follows), then the close."""
    await ws.send_json({"event": "error", **err.to_problem(), "code": code})
    await ws.close(code, close_reason(str(err)))
