"""The HTTP client for a zserve server, used by the CLI and by Python programs.

    from zserve.client import Client

    with Client("http://127.0.0.1:8001") as client:
        result = client.invoke({"city": "Paris"})
        print(result.outputs)

Every error the server answers (problem+json) is raised as the matching ``zserve.errors`` class
(``InvalidParameters`` with ``.errors``, ``StepFailed`` with ``.step``, ...); a server that does
not answer is ``ServerUnreachable``. ``AsyncClient`` is the same API for asyncio programs.

Jobs run in the background and are followed by their events (Server-Sent Events)::

    with Client("http://127.0.0.1:8001") as client:
        job_id = client.submit({"prompt": "hello"})["job_id"]
        for event in client.events(job_id):          # ends after the terminal event
            print(event["seq"], event["event"], event.get("chunk", ""))
        print(client.job(job_id)["status"])

``events`` reconnects by itself (``Last-Event-ID``) when the connection drops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, SSEError, aconnect_sse, connect_sse

from zserve import errors
from zserve._version import __version__
from zserve.events import TERMINAL

__all__ = ["AsyncClient", "Client", "InvokeResult", "error_from_response"]

DEFAULT_TIMEOUT = 300.0
#: ``events``: reconnect this many times in a row when the stream drops, waiting
#: ``RETRY_BACKOFF_S`` x 1, 2, 4, ... between tries.
STREAM_RETRIES = 3
RETRY_BACKOFF_S = 0.25


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


def _by_problem() -> dict[str, type[errors.ZServeError]]:
    found: dict[str, type[errors.ZServeError]] = {}
    pending: list[type[errors.ZServeError]] = [errors.ZServeError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.problem, cls)
        pending.extend(cls.__subclasses__())
    return found


_BY_STATUS: dict[int, type[errors.ZServeError]] = {
    400: errors.UsageError,
    401: errors.Unauthorized,
    404: errors.NotFound,
    409: errors.UsageError,
    413: errors.PayloadTooLarge,
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
    cls = _by_problem().get(kind) or _BY_STATUS.get(response.status_code, errors.ZServeError)
    return cls.from_problem(doc, detail=detail, status_code=response.status_code)


def _invoke_body(
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


def _result(response: httpx.Response) -> InvokeResult:
    doc = _document(response)
    return InvokeResult(
        outputs=doc["outputs"],
        job_id=doc["job_id"],
        run_id=doc.get("run_id"),
        capture=doc.get("capture", "none"),
        execution_time_ms=doc.get("execution_time_ms", 0.0),
        raw=doc,
    )


def _document(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        raise error_from_response(response)
    doc: dict[str, Any] = response.json()
    return doc


def _unreachable(url: str, exc: httpx.TransportError) -> errors.ServerError:
    if isinstance(exc, httpx.ReadTimeout):
        return errors.ServerError(f"The server at {url} did not answer in time ({exc})")
    return errors.ServerUnreachable(
        f"No zserve server answers at {url} ({type(exc).__name__}): start one with "
        "`zserve start --deployment NAME --detach`, or check --url / ZSERVE_URL"
    )


def _headers(auth_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"zserve-client/{__version__}"}
    if auth_key:
        headers["Authorization"] = f"Bearer {auth_key}"
    return headers


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/jobs/{quote(job_id, safe='')}{suffix}"


def _stream_path(job_id: str) -> str:
    return f"/stream/{quote(job_id, safe='')}"


def _jobs_query(status: str | None, limit: int) -> dict[str, Any]:
    query: dict[str, Any] = {"limit": limit}
    if status is not None:
        query["status"] = status
    return query


def _stream_headers(after: int) -> dict[str, str]:
    return {"Last-Event-ID": str(after)} if after else {}


def _sse_event(data: str) -> dict[str, Any] | None:
    """One SSE ``data:`` field as an event document (``None`` for an empty one)."""
    if not data:
        return None
    doc = json.loads(data)
    return doc if isinstance(doc, dict) else None


def _not_a_stream(url: str, exc: SSEError) -> errors.ServerError:
    return errors.ServerError(f"The server at {url} did not answer with an event stream ({exc})")


def _stream_ended(url: str, job_id: str, after: int, cause: str) -> errors.ServerError:
    return errors.ServerError(
        f"The event stream of job {job_id} from {url} broke off after event {after} and could "
        f"not be resumed ({cause}): follow it again with `zserve stream {job_id}`"
    )


class Client:
    """A blocking client for one server. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str,
        *,
        auth_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=_headers(auth_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request; transport failures become ServerUnreachable. No status check."""
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None

    def health(self) -> dict[str, Any]:
        return _document(self.request("GET", "/health"))

    def info(self) -> dict[str, Any]:
        return _document(self.request("GET", "/info"))

    def status(self) -> dict[str, Any]:
        return _document(self.request("GET", "/status"))

    def metrics(self) -> dict[str, Any]:
        return _document(self.request("GET", "/metrics"))

    def invoke_response(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """``POST /invoke`` and return the raw response, error or not."""
        body = _invoke_body(parameters, capture, sample_rate, timeout_s)
        return self.request("POST", "/invoke", json=body)

    def invoke(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> InvokeResult:
        """Run the pipeline and wait for its outputs; raises the matching ZServeError."""
        return _result(
            self.invoke_response(
                parameters, capture=capture, sample_rate=sample_rate, timeout_s=timeout_s
            )
        )

    def submit_response(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """``POST /invoke?mode=async`` and return the raw response, error or not."""
        body = _invoke_body(parameters, capture, sample_rate, timeout_s)
        return self.request("POST", "/invoke", params={"mode": "async"}, json=body)

    def submit(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Queue a job and return at once: ``{"job_id", "status": "queued", "links"}``."""
        return _document(
            self.submit_response(
                parameters, capture=capture, sample_rate=sample_rate, timeout_s=timeout_s
            )
        )

    def job(self, job_id: str) -> dict[str, Any]:
        """One job: status, steps, outputs or error (``NotFound`` for an unknown id)."""
        return _document(self.request("GET", _job_path(job_id)))

    def jobs(self, status: str | None = None, limit: int = 100) -> dict[str, Any]:
        """Jobs, newest first: ``{"jobs": [...], "total"}``."""
        return _document(self.request("GET", "/jobs", params=_jobs_query(status, limit)))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job: ``{"job_id", "status"}``. A finished job is a
        ``JobFinished`` (409), an unknown one ``NotFound``."""
        return _document(self.request("POST", _job_path(job_id, "/cancel")))

    def events(
        self,
        job_id: str,
        last_event_id: int | None = None,
        *,
        retries: int = STREAM_RETRIES,
    ) -> Generator[dict[str, Any], None, None]:
        """The job's events (``{"event", "job_id", "seq", "ts", ...}``) from ``GET /stream/ID``,
        after ``last_event_id`` when given, up to and including the terminal one. A dropped
        connection is resumed with ``Last-Event-ID`` up to ``retries`` times in a row."""
        after = last_event_id or 0
        failures = 0
        connected = False  # a server that never answered is unreachable, not a dropped stream
        while True:
            cause = "the stream ended before the job did"
            try:
                with connect_sse(
                    self._http, "GET", _stream_path(job_id), headers=_stream_headers(after)
                ) as source:
                    _check_stream(source)
                    connected = True
                    for sse in source.iter_sse():
                        doc = _sse_event(sse.data)
                        if doc is None or int(doc.get("seq", 0)) <= after:
                            continue
                        after, failures = int(doc["seq"]), 0
                        yield doc
                        if doc.get("event") in TERMINAL:
                            return
            except SSEError as exc:
                raise _not_a_stream(self.url, exc) from None
            except httpx.TransportError as exc:
                if not connected and isinstance(exc, httpx.ConnectError):
                    raise _unreachable(self.url, exc) from None
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            failures += 1
            if failures > retries:
                raise _stream_ended(self.url, job_id, after, cause)
            time.sleep(RETRY_BACKOFF_S * 2 ** (failures - 1))


def _check_stream(source: EventSource) -> None:
    """An error answer (problem+json) instead of a stream raises its ZServeError."""
    response = source.response
    if response.is_error:
        response.read()
        raise error_from_response(response)


async def _acheck_stream(source: EventSource) -> None:
    response = source.response
    if response.is_error:
        await response.aread()
        raise error_from_response(response)


class AsyncClient:
    """``Client`` for asyncio programs: the same methods, awaited."""

    def __init__(
        self,
        url: str,
        *,
        auth_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(auth_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None

    async def health(self) -> dict[str, Any]:
        return _document(await self.request("GET", "/health"))

    async def info(self) -> dict[str, Any]:
        return _document(await self.request("GET", "/info"))

    async def invoke(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> InvokeResult:
        body = _invoke_body(parameters, capture, sample_rate, timeout_s)
        return _result(await self.request("POST", "/invoke", json=body))

    async def submit(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        body = _invoke_body(parameters, capture, sample_rate, timeout_s)
        return _document(await self.request("POST", "/invoke", params={"mode": "async"}, json=body))

    async def job(self, job_id: str) -> dict[str, Any]:
        return _document(await self.request("GET", _job_path(job_id)))

    async def jobs(self, status: str | None = None, limit: int = 100) -> dict[str, Any]:
        return _document(await self.request("GET", "/jobs", params=_jobs_query(status, limit)))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return _document(await self.request("POST", _job_path(job_id, "/cancel")))

    async def events(
        self,
        job_id: str,
        last_event_id: int | None = None,
        *,
        retries: int = STREAM_RETRIES,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """``Client.events``, as an async iterator."""
        after = last_event_id or 0
        failures = 0
        connected = False  # a server that never answered is unreachable, not a dropped stream
        while True:
            cause = "the stream ended before the job did"
            try:
                async with aconnect_sse(
                    self._http, "GET", _stream_path(job_id), headers=_stream_headers(after)
                ) as source:
                    await _acheck_stream(source)
                    connected = True
                    async for sse in source.aiter_sse():
                        doc = _sse_event(sse.data)
                        if doc is None or int(doc.get("seq", 0)) <= after:
                            continue
                        after, failures = int(doc["seq"]), 0
                        yield doc
                        if doc.get("event") in TERMINAL:
                            return
            except SSEError as exc:
                raise _not_a_stream(self.url, exc) from None
            except httpx.TransportError as exc:
                if not connected and isinstance(exc, httpx.ConnectError):
                    raise _unreachable(self.url, exc) from None
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            failures += 1
            if failures > retries:
                raise _stream_ended(self.url, job_id, after, cause)
            await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (failures - 1))
