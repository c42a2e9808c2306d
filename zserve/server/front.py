"""The front of the hot path: an ordinary ``POST /invoke`` in one step, past a dozen layers.

Every request a server gets crosses FastAPI, Starlette's error and exception middleware and
zserve's own (request id, Host, CORS, auth, body limit, HEAD, gzip: see ``app.create_app``): a
few µs each, a quarter of what a run-only invoke costs. ``InvokeFront`` looks once at the headers
of a ``POST /invoke``. When every layer would let that request through, it does what they would
on the way (keep the request id, check Host and the bearer key, gzip for a client that accepts
it, the app's 500 for an unexpected error) and calls the handler itself. Any other request, and
an invoke some layer would act on (a refusal, a body without Content-Length, a traced request,
any request when CORS is on), goes down the whole stack, which gives the only answer there is
for it.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from zserve.server.guard import HostGuard
from zserve.server.logs import REQUEST_ID, given_request_id, request_id_of
from zserve.server.middleware import GZIP_LEVEL, GZIP_MINIMUM, answer
from zserve.server.problems import unexpected

__all__ = ["InvokeFront"]
#: What ``InvokeFront.look`` finds a request to be.
_FULL, _PLAIN, _GZIP = 0, 1, 2


class InvokeFront:
    """The app's middleware stack (``full``) with a way round it: ``handler`` for the ordinary
    ``POST /invoke``. ``key``: the bearer key when auth is on; ``cors``: origins are configured,
    so a request with an ``Origin`` gets CORS headers from the stack."""

    def __init__(
        self, full: ASGIApp, handler: Any, *, guard: HostGuard, limit: int, key: str | None,
        cors: bool,
    ) -> None:  # fmt: skip
        self.full = full
        self.handler = handler
        self.guard = guard
        self.limit = limit
        self.key = key.encode() if key else None
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = (
            self.look(scope)
            if scope["type"] == "http" and scope["path"] == "/invoke" and scope["method"] == "POST"
            else _FULL
        )
        if kind == _FULL:
            await self.full(scope, receive, send)
            return
        request_id, header = request_id_of(given_request_id(scope))
        token = REQUEST_ID.set(request_id)
        try:
            request = Request(scope, receive, send)
            response: Response
            try:
                response = await answer(self.handler, request)
            except Exception as exc:  # the app's 500, as Starlette's ServerErrorMiddleware gives
                response = unexpected(request, exc)
            response.raw_headers.append(header)
            if kind == _GZIP:
                gzip = GZipMiddleware(response, minimum_size=GZIP_MINIMUM, compresslevel=GZIP_LEVEL)
                await gzip(scope, receive, send)
            else:
                await response(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)

    def look(self, scope: Scope) -> int:
        """``_FULL`` unless every layer of the stack would let this ``POST /invoke`` through
        (of a repeated header the first counts, as in those layers; of Host the last)."""
        if self.cors:
            return _FULL
        host = length = auth = encoding = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"content-length" and length is None:
                length = value
            elif name == b"authorization" and auth is None:
                auth = value
            elif name == b"accept-encoding" and encoding is None:
                encoding = value
        if length is None or not self.guard.passes(host):
            return _FULL
        try:
            if int(length) > self.limit:
                return _FULL
        except ValueError:
            return _FULL
        if self.key is not None:
            scheme, _, given = (auth or b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
                return _FULL
        return _GZIP if encoding is not None and b"gzip" in encoding else _PLAIN
