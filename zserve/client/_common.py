"""What ``Client`` and ``AsyncClient`` share: request bodies, paths, the result type, and
turning an error answer (problem+json) into the matching ``zserve.errors`` class."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import SSEError

from zserve import errors
from zserve._version import __version__

__all__ = ["DEFAULT_TIMEOUT", "INVOKE_STREAM", "InvokeResult", "error_from_response"]

DEFAULT_TIMEOUT = 300.0
#: Named in ``GET /info``'s ``features`` by a server whose ``POST /invoke`` answers with the
#: invocation's events when asked with ``Accept: text/event-stream`` (``invoke_stream``).
INVOKE_STREAM = "invoke-stream"


@dataclass(frozen=True)
class InvokeResult:
    """A successful ``POST /invoke``."""

    outputs: dict[str, Any]
    job_id: str
    run_id: str | None
    capture: str
    execution_time_ms: float
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def output(self) -> Any:
        """The value of a single-output pipeline (``outputs["output"]``)."""
        return self.outputs["output"]


def by_problem() -> dict[str, type[errors.ZServeError]]:
    found: dict[str, type[errors.ZServeError]] = {}
    pending: list[type[errors.ZServeError]] = [errors.ZServeError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.problem, cls)
        pending.extend(cls.__subclasses__())
    return found


BY_STATUS: dict[int, type[errors.ZServeError]] = {
    400: errors.UsageError,
    401: errors.Unauthorized,
    403: errors.ForbiddenOrigin,
    404: errors.NotFound,
    406: errors.NotAcceptable,
    409: errors.UsageError,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.InvalidParameters,
    429: errors.Overloaded,
    500: errors.ExecutionFailed,
    501: errors.NotSupported,
    503: errors.ServerError,
    504: errors.ExecutionTimeout,
}


def error_from_response(response: httpx.Response) -> errors.ZServeError:
    """The ``zserve.errors`` exception for an error response. ``.problem_doc`` keeps the body."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    detail = str(doc.get("detail") or response.text.strip() or response.reason_phrase)
    kind = str(doc.get("type", "")).rsplit("/", 1)[-1]
    cls = by_problem().get(kind) or BY_STATUS.get(response.status_code, errors.ZServeError)
    return cls.from_problem(doc, detail=detail, status_code=response.status_code)


def invoke_body(
    parameters: dict[str, Any] | None,
    capture: str | None,
    sample_rate: float | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"parameters": parameters or {}}
    if capture is not None:
        override: dict[str, Any] = {"mode": capture}
        if sample_rate is not None:
            override["sample_rate"] = sample_rate
        body["capture_override"] = override
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return body


def result(response: httpx.Response) -> InvokeResult:
    doc = document(response)
    return InvokeResult(
        outputs=doc["outputs"],
        job_id=doc["job_id"],
        run_id=doc.get("run_id"),
        capture=doc.get("capture", "none"),
        execution_time_ms=doc.get("execution_time_ms", 0.0),
        raw=doc,
    )


def document(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        raise error_from_response(response)
    doc: dict[str, Any] = response.json()
    return doc


def unreachable(url: str, exc: httpx.TransportError) -> errors.ServerError:
    if isinstance(exc, httpx.ReadTimeout):
        return errors.ServerError(f"The server at {url} did not answer in time ({exc})")
    return errors.ServerUnreachable(
        f"No zserve server answers at {url} ({type(exc).__name__}): start one with "
        "`zserve start --deployment NAME --detach`, or check --url / ZSERVE_URL"
    )


def headers(auth_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"zserve-client/{__version__}"}
    if auth_key:
        headers["Authorization"] = f"Bearer {auth_key}"
    return headers


def idempotency_header(key: str | None) -> dict[str, str]:
    """``Idempotency-Key`` for a submit (none without a key)."""
    return {} if key is None else {"Idempotency-Key": key}


def job_path(job_id: str, suffix: str = "") -> str:
    return f"/jobs/{quote(job_id, safe='')}{suffix}"


def stream_path(job_id: str) -> str:
    return f"/stream/{quote(job_id, safe='')}"


def jobs_query(
    status: str | None, limit: int, cursor: str | None = None, prefix: str | None = None
) -> dict[str, Any]:
    query: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("cursor", cursor), ("prefix", prefix)):
        if value is not None:
            query[name] = value
    return query


def run_path(run_id: str, suffix: str = "") -> str:
    return f"/runs/{quote(run_id, safe='')}{suffix}"


def runs_query(
    status: str | None, capture: str | None, since: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    query: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("capture", capture), ("since", since),
                        ("cursor", cursor)):  # fmt: skip
        if value is not None:
            query[name] = value
    return query


def sse_event(data: str) -> dict[str, Any] | None:
    """One SSE ``data:`` field as an event document (``None`` for an empty one)."""
    if not data:
        return None
    doc = json.loads(data)
    return doc if isinstance(doc, dict) else None


def not_a_stream(url: str, exc: SSEError) -> errors.ServerError:
    return errors.ServerError(f"The server at {url} did not answer with an event stream ({exc})")


def stream_ended(url: str, job_id: str, after: int, cause: str) -> errors.ServerError:
    return errors.ServerError(
        f"The event stream of job {job_id} from {url} broke off after event {after} and could "
        f"not be resumed ({cause}): follow it again with `zserve stream {job_id}`"
    )


def features_of(info: dict[str, Any]) -> frozenset[str]:
    """What a server says it offers (``GET /info``'s ``features``; none from an older one)."""
    found = info.get("features")
    return frozenset(str(f) for f in found) if isinstance(found, list) else frozenset()


def is_event_stream(response: httpx.Response) -> bool:
    kind: str = response.headers.get("content-type", "")
    return kind.partition(";")[0].strip() == "text/event-stream"


def answered_events(response: httpx.Response) -> list[dict[str, Any]]:
    """A sync invoke's JSON answer (from a server that did not stream it, such as a proxy that
    dropped ``Accept``) as the one event that ends a job: ``job.completed``."""
    doc = document(response)
    return [{"event": "job.completed", "job_id": doc.get("job_id"), "seq": 1, "ts": time.time(),
             "outputs": doc.get("outputs"), "execution_time_ms": doc.get("execution_time_ms"),
             "run_id": doc.get("run_id")}]  # fmt: skip


def invocation_lost(url: str, job_id: str | None, after: int, cause: str) -> errors.ServerError:
    """The answer of ``invoke_stream`` broke off before the job ended (it cannot be resumed:
    the server cancels an invocation whose client leaves)."""
    which = f"job {job_id}" if job_id else "the invocation"
    return errors.ServerError(
        f"The event stream of {which} from {url} broke off after event {after} ({cause}); "
        "the server cancels an invocation whose client leaves"
    )
