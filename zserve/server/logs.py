"""What a server writes to its log: one line per event, each naming the request it is about.

Every response carries ``X-Request-ID`` (the client's, when it sent a usable one, or a new one);
``RequestIdMiddleware`` keeps it in a context variable, which the tasks a request starts (an
async job, say) inherit, and ``RequestIdFilter`` puts it on every log record of those tasks.
``ZSERVE_LOG_FORMAT=json`` writes one JSON object per line instead of text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.logging import DefaultFormatter

from zserve.records import new_request_id

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "RedactTokens",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "TextFormatter",
    "given_request_id",
    "log_config",
    "request_id_of",
]

#: The id of the request being served (None outside one).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
#: What a client's X-Request-ID may be to be kept: printable, no spaces, at most 128 characters.
_USABLE = re.compile(rb"[!-~]{1,128}")


class RequestIdMiddleware:
    """Pure ASGI: the request's id in ``REQUEST_ID`` and in the ``X-Request-ID`` answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id, header = request_id_of(given_request_id(scope))
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def given_request_id(scope: Scope) -> bytes | None:
    """The request's first ``X-Request-ID`` header, if any."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value  # type: ignore[no-any-return]
    return None


def request_id_of(given: bytes | None) -> tuple[str, tuple[bytes, bytes]]:
    """The id of a request whose ``X-Request-ID`` is ``given`` (kept when usable, else a new
    one) and the header that carries it back."""
    if given is not None and _USABLE.fullmatch(given):
        return given.decode(), (b"x-request-id", given)
    request_id = new_request_id()
    return request_id, (b"x-request-id", request_id.encode())


class RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


_TOKEN = re.compile(r"([?&]token=)[^&\s\"]*")


class RedactTokens(logging.Filter):
    """Stream tokens out of log lines (uvicorn's access and WebSocket lines show the query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "token=" in a for a in record.args
        ):
            record.args = tuple(
                _TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN.sub(r"\1[redacted]", record.msg)
        return True


class TextFormatter(DefaultFormatter):
    """uvicorn's colourful text, then ``request_id=...`` when the line is about a request."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            return text
        head, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{head} request_id={request_id}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            doc["request_id"] = request_id
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def log_config(level: str, fmt: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration with zserve's logger, its request ids, and ``fmt``."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "formatters": dict(LOGGING_CONFIG["formatters"]),
        "handlers": dict(LOGGING_CONFIG["handlers"]),
        "loggers": dict(LOGGING_CONFIG["loggers"]),
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "redact_tokens": {"()": RedactTokens},
        },
    }
    for name in ("default", "access"):
        config["handlers"][name] = {**config["handlers"][name], "filters": ["redact_tokens"]}
    if fmt == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": JsonFormatter}
        config["formatters"]["zserve"] = {"()": JsonFormatter}
    else:
        config["formatters"]["zserve"] = {
            "()": TextFormatter,
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        }
    config["handlers"]["zserve"] = {
        "formatter": "zserve",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "filters": ["request_id", "redact_tokens"],
    }
    config["loggers"]["zserve"] = {
        "handlers": ["zserve"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
