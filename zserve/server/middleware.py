"""Pure ASGI middleware (no BaseHTTPMiddleware): bearer auth, the request body limit, HEAD for
every GET route, gzip, and the shortcut of the hot route ``POST /invoke``."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zserve.errors import PayloadTooLarge, Unauthorized, ZServeError
from zserve.server.problems import client_gone, close_reason, problem_from_error
from zserve.server.tokens import StreamTokens

__all__ = [
    "GZIP_LEVEL",
    "GZIP_MINIMUM",
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "GzipWhenAccepted",
    "HeadMiddleware",
    "InvokeShortcut",
    "answer",
]

#: Paths that never need the key: the probes (load balancers and kubelets send none), and the
#: dashboard's page, which asks for the key itself (``server/dashboard.py``).
OPEN_PATHS = frozenset({"/health", "/livez", "/readyz", "/ui", "/ui/"})
#: Path prefixes that never need the key: the dashboard's static files.
OPEN_PREFIXES = ("/ui/static/",)
#: Answers of at least this many bytes are gzipped for a client that accepts it, at this level.
GZIP_MINIMUM, GZIP_LEVEL = 1024, 6


class AuthMiddleware:
    """Every path but the probes (``/health``, ``/livez``, ``/readyz``) and the dashboard's page
    and files (``/ui``, ``/ui/static/``) needs ``Authorization:
    Bearer KEY`` (constant-time compare), except that a job's streams take a stream token as
    ``?token=`` instead (``tokens``): checked here for ``GET /stream/{id}``; for ``WS /stream``
    the handler checks it against the job the client attaches to
    (``scope["zserve.stream_token"]``)."""

    def __init__(self, app: ASGIApp, key: str, tokens: StreamTokens) -> None:
        self.app = app
        self.expected = key.encode()
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in OPEN_PATHS or (scope["type"] == "http" and path.startswith(OPEN_PREFIXES)):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.expected):
            await self.app(scope, receive, send)
            return
        stream_token = None if given else _query_token(scope)
        if stream_token is not None:
            if scope["type"] == "websocket" and path == "/stream":
                await self.app({**scope, "zserve.stream_token": stream_token}, receive, send)
                return
            job_id = unquote(path[len("/stream/") :]) if path.startswith("/stream/") else None
            if job_id and self.tokens.valid(stream_token, job_id):
                await self.app(scope, receive, send)
                return
            err = Unauthorized(
                "The stream token is wrong, expired or for another job: get a new one with "
                "POST /jobs/{id}/token (authenticated)"
            )
        else:
            reason = "wrong" if given else "missing"
            err = Unauthorized(
                f"The Authorization header is {reason}: send 'Authorization: Bearer <key>' "
                "with the server's ZSERVE_AUTH_KEY"
            )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": close_reason(str(err))})
            return
        await problem_from_error(err)(scope, receive, send)


def _query_token(scope: Scope) -> str | None:
    query = scope.get("query_string", b"")
    if b"token=" not in query:
        return None
    found = parse_qs(query.decode("latin-1")).get("token")
    return found[0] if found else None


class BodyLimitMiddleware:
    """413 when a body is over ``limit`` bytes: from Content-Length, or by counting chunks."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body is over the limit of {self.limit} bytes; send less, or raise "
            "the limit with ZSERVE_MAX_BODY_BYTES"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await problem_from_error(self._error())(scope, receive, send)
                    return
                # a declared length is enforced by the HTTP server itself
                await self.app(scope, receive, send)
                return
        seen = 0
        limit = self.limit

        async def counting_receive() -> Message:
            nonlocal seen
            message: Any = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise self._error()
            return message  # type: ignore[no-any-return]

        await self.app(scope, counting_receive, send)


class HeadMiddleware:
    """``HEAD`` on a GET route: the GET's status and headers (its Content-Length included),
    without the body. Routes that answer HEAD themselves (``own``: the event streams, whose GET
    does not end) are left to do so."""

    def __init__(self, app: ASGIApp, own: tuple[str, ...] = ()) -> None:
        self.app = app
        self.own = own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "HEAD"
            or scope["path"].startswith(self.own)
        ):
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


class GzipWhenAccepted:
    """Starlette's GZipMiddleware (JSON answers of 1 KiB or more; never event streams), asked
    only when the client accepts gzip: a request without it pays one header scan, not a
    responder wrapping its answer."""

    def __init__(self, app: ASGIApp, minimum_size: int = GZIP_MINIMUM) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=GZIP_LEVEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"accept-encoding":
                    if b"gzip" in value:
                        await self.gzip(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)


class InvokeShortcut:
    """``POST /invoke`` straight to its handler, past Starlette's exception middleware,
    FastAPI's wrappers and the router (about 4 µs a request); innermost, so every other
    middleware still applies. Its errors get the app's own answers: a ZServeError its problem
    document, a client gone the same log line and 400; anything else reaches Starlette's
    ``ServerErrorMiddleware`` (outermost), whose handler is the app's 500."""

    def __init__(self, app: ASGIApp, handler: Any) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invoke" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        response = await answer(self.handler, Request(scope, receive, send))
        await response(scope, receive, send)


async def answer(handler: Any, request: Request) -> Response:
    """``handler``'s answer to ``request``, its errors answered as the app answers them: a
    ZServeError its problem document, a client gone 400 (and a log line)."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except ZServeError as exc:
        return problem_from_error(exc)
    except ClientDisconnect:
        return client_gone(request)
