"""The answers of ``POST /invoke`` (``service.Service.invoke``): the success body already
encoded (``JSONBytes``), its ``Server-Timing`` header, and the 500 for outputs that JSON cannot
encode."""

from __future__ import annotations

import logging
from typing import Any

from pydantic_core import PydanticSerializationError, to_json
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from zserve.records import StepState
from zserve.server import problems

__all__ = ["ASK_TIMING", "JSONBytes", "server_timing", "unserialisable"]

logger = logging.getLogger("zserve.server")


#: The request header that asks for a Server-Timing answer header (``zserve bench`` sends it).
ASK_TIMING = (b"zserve-timing", b"1")


def server_timing(elapsed_s: float, steps: list[StepState]) -> str:
    """``engine;dur=MS`` (the run, waiting for a slot included), then ``step.NAME;dur=MS`` for
    each step that ran, in milliseconds."""
    parts = [f"engine;dur={elapsed_s * 1000:.3f}"]
    parts += [f"step.{s['name']};dur={s['duration_ms']}" for s in steps if s["duration_ms"]]
    return ", ".join(parts)


def unserialisable(outputs: dict[str, Any], exc: Exception, job_id: str) -> Response:
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


class JSONBytes(Response):
    """A JSON answer already encoded, sent as two ASGI messages with headers made in one go
    (a Starlette ``Response`` builds and checks them per answer: the hot path's answer)."""

    media_type = "application/json"

    def __init__(self, content: bytes, timing: str | None = None) -> None:
        self.body, self.status_code, self.background = content, 200, None
        self.raw_headers = [(b"content-length", str(len(content)).encode()),
                            (b"content-type", b"application/json")]  # fmt: skip
        if timing is not None:
            self.raw_headers.append((b"server-timing", timing.encode("latin-1")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})
