"""RFC 9457 problem+json responses, and the handlers that turn every error into one."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from pydantic_core import to_json
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from zserve.errors import PROBLEM_BASE, ZServeError, describe_fields

__all__ = [
    "PROBLEM_BASE",
    "client_gone",
    "close_reason",
    "install_handlers",
    "problem",
    "problem_from_error",
    "unexpected",
]

logger = logging.getLogger("zserve.server")


def problem(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    doc: dict[str, Any] = {
        "type": type_,
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
        "success": False,
    }
    doc.update(extra)
    return Response(
        to_json(doc), status_code=status, media_type="application/problem+json", headers=headers
    )


def _phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status ("Not Found"), or "Error"."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_from_error(err: ZServeError, **extra: Any) -> Response:
    headers = None
    if err.http_status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif err.retry_after is not None:
        headers = {"Retry-After": str(err.retry_after)}
    return Response(
        to_json(err.to_problem(**extra)),
        status_code=err.http_status,
        media_type="application/problem+json",
        headers=headers,
    )


def close_reason(text: str, limit: int = 123) -> str:
    """A WebSocket close reason: at most ``limit`` bytes of UTF-8 (the protocol's bound), cut
    between characters, never inside one."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


async def _zserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ZServeError)
    return problem_from_error(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status == 404:
        detail = f"No such path: {request.method} {request.url.path}"
    elif status == 405:
        detail = f"Method {request.method} is not allowed on {request.url.path}"
    return problem(status, detail, headers=dict(exc.headers or {}) or None)


async def _validation_error(request: Request, exc: Exception) -> Response:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", "")}
        for e in getattr(exc, "errors", lambda: [])()
    ]
    detail = "Invalid request: " + describe_fields(errors)
    return problem(
        422, detail, type_=PROBLEM_BASE + "invalid-request", title="Invalid request", errors=errors
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    return client_gone(request)


def client_gone(request: Request) -> Response:
    """The client went away while sending its request: nobody reads the answer."""
    logger.info("The client of %s %s went away before sending all of it", request.method,
                request.url.path)  # fmt: skip
    return Response(status_code=400)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return unexpected(request, exc)


def unexpected(request: Request, exc: Exception) -> Response:
    """The 500 of an error nobody expected, logged with its traceback."""
    logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "The server hit an unexpected error; its log has the details.")


def install_handlers(app: Any) -> None:
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(ZServeError, _zserve_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
