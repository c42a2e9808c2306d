"""``Client``: the blocking HTTP client for a zserve server."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from zserve.client._common import (
    DEFAULT_TIMEOUT,
    INVOKE_STREAM,
    InvokeResult,
    answered_events,
    document,
    error_from_response,
    features_of,
    headers,
    idempotency_header,
    invocation_lost,
    invoke_body,
    is_event_stream,
    job_path,
    jobs_query,
    not_a_stream,
    result,
    run_path,
    runs_query,
    sse_event,
    stream_path,
    unreachable,
)
from zserve.client._resume import RECONNECT_S, STREAM_RETRIES, Dropped, Resume
from zserve.errors import ZServeError
from zserve.events import TERMINAL

__all__ = ["Client"]


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
            base_url=self.url, headers=headers(auth_key), timeout=timeout, transport=transport
        )
        self._features: frozenset[str] | None = None  # GET /info's, once asked

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
            raise unreachable(self.url, exc) from None

    def health(self) -> dict[str, Any]:
        return document(self.request("GET", "/health"))

    def info(self) -> dict[str, Any]:
        doc = document(self.request("GET", "/info"))
        self._features = features_of(doc)
        return doc

    def offers(self, feature: str) -> bool:
        """Whether the server names ``feature`` in ``GET /info``'s ``features`` (asked once
        per client, unless ``info()`` was called already)."""
        if self._features is None:
            self.info()
        return feature in (self._features or ())

    def status(self) -> dict[str, Any]:
        return document(self.request("GET", "/status"))

    def metrics(self) -> dict[str, Any]:
        return document(self.request("GET", "/metrics"))

    def invoke_response(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """``POST /invoke`` and return the raw response, error or not."""
        body = invoke_body(parameters, capture, sample_rate, timeout_s)
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
        return result(
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
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """``POST /invoke?mode=async`` and return the raw response, error or not."""
        body = invoke_body(parameters, capture, sample_rate, timeout_s)
        return self.request("POST", "/invoke", params={"mode": "async"}, json=body,
                            headers=idempotency_header(idempotency_key))  # fmt: skip

    def submit(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Queue a job and return at once: ``{"job_id", "status": "queued", "links"}``. With
        ``idempotency_key`` (yours, one per job: a UUID), sending it again with the same
        request, from any client to any host sharing the broker, starts nothing more: the
        answer is the first job's (``status`` as it is now). Nothing is retried for you."""
        return document(
            self.submit_response(
                parameters, capture=capture, sample_rate=sample_rate, timeout_s=timeout_s,
                idempotency_key=idempotency_key,
            )
        )  # fmt: skip

    def invoke_stream(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """Run the pipeline and yield its events as they happen, as ``events`` does, up to
        and including the terminal one (``job.completed`` with the outputs, ``job.failed``,
        ``job.cancelled``). A server that offers it (``INVOKE_STREAM`` in ``GET /info``'s
        ``features``) sends them on the answer to one ``POST /invoke``; with an older one the
        job is submitted and followed on ``GET /stream/ID``. A refused request raises its
        error (``InvalidParameters``, ``Overloaded``...). Closing the generator before the end
        cancels the invocation."""
        body = invoke_body(parameters, capture, sample_rate, timeout_s)
        if not self.offers(INVOKE_STREAM):
            yield from self._submit_and_follow(body)
            return
        job_id, after = None, 0
        try:
            with connect_sse(self._http, "POST", "/invoke", json=body) as source:
                response = source.response
                if response.is_error or not is_event_stream(response):
                    response.read()
                    yield from answered_events(response)
                    return
                job_id = response.headers.get("x-job-id")
                for sse in source.iter_sse():
                    doc = sse_event(sse.data)
                    if doc is None:
                        continue
                    after = int(doc.get("seq", after))
                    yield doc
                    if doc.get("event") in TERMINAL:
                        return
            cause = "the stream ended before the job did"
        except httpx.TransportError as exc:
            if job_id is None and isinstance(exc, httpx.ConnectError):
                raise unreachable(self.url, exc) from None
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise invocation_lost(self.url, job_id, after, cause)

    def _submit_and_follow(self, body: dict[str, Any]) -> Generator[dict[str, Any], None, None]:
        """``invoke_stream`` with a server that cannot stream an invoke's answer."""
        response = self.request("POST", "/invoke", params={"mode": "async"}, json=body)
        job_id = document(response)["job_id"]
        ended = False
        try:
            for doc in self.events(job_id):
                ended = doc.get("event") in TERMINAL
                yield doc
        finally:
            if not ended:  # left early: the invocation ends with its stream, as with a new server
                with contextlib.suppress(ZServeError):
                    self.cancel(job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        """One job: status, steps, outputs or error (``NotFound`` for an unknown id)."""
        return document(self.request("GET", job_path(job_id)))

    def jobs(
        self,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        *,
        prefix: str | None = None,
    ) -> dict[str, Any]:
        """A page of jobs, newest first, without outputs: ``{"jobs": [...], "next"}``; pass
        ``next`` back as ``cursor`` for the page after (``limit`` at most 500); ``prefix``:
        only the jobs whose id starts with it."""
        query = jobs_query(status, limit, cursor, prefix)
        return document(self.request("GET", "/jobs", params=query))

    def runs(
        self,
        *,
        status: str | None = None,
        capture: str | None = None,
        since: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Runs this server's deployment recorded, newest first: ``{"runs": [...], "next"?}``
        (pass ``next`` back as ``cursor`` for the next page; ``since``: ISO 8601 or ``7d``)."""
        query = runs_query(status, capture, since, limit, cursor)
        return document(self.request("GET", "/runs", params=query))

    def run(self, run_id: str) -> dict[str, Any]:
        """One recorded run: steps with timings, values as captured (``NotFound`` if none)."""
        return document(self.request("GET", run_path(run_id)))

    def artifact(self, run_id: str, artifact_id: str) -> bytes:
        """The content of one captured value (JSON text, or the bytes a step returned)."""
        response = self.request("GET", run_path(run_id, f"/artifacts/{artifact_id}"))
        if response.is_error:
            raise error_from_response(response)
        return response.content

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job: ``{"job_id", "status"}``. A finished job is a
        ``JobFinished`` (409), an unknown one ``NotFound``."""
        return document(self.request("POST", job_path(job_id, "/cancel")))

    def events(
        self,
        job_id: str,
        last_event_id: int | None = None,
        *,
        retries: int = STREAM_RETRIES,
        reconnect_s: float = RECONNECT_S,
    ) -> Generator[dict[str, Any], None, None]:
        """The job's events (``{"event", "job_id", "seq", "ts", ...}``) from ``GET /stream/ID``,
        after ``last_event_id`` when given, up to and including the terminal one, each once. A
        dropped connection is resumed with ``Last-Event-ID`` up to ``retries`` times in a row;
        a stream the server ends early (a host that stops sends its clients to another, with
        ``retry:``) is resumed after the server's delay for up to ``reconnect_s`` seconds
        without an event."""
        resume = Resume(self.url, job_id, last_event_id, retries, reconnect_s)
        while True:
            try:
                with connect_sse(
                    self._http, "GET", stream_path(job_id), headers=resume.headers()
                ) as source:
                    if source.response.is_error:
                        source.response.read()
                    if resume.opened(source.response):
                        return  # the job had ended: nothing after `after`
                    for sse in source.iter_sse():
                        doc = resume.event(sse)
                        if doc is None:
                            continue
                        yield doc
                        if doc.get("event") in TERMINAL:
                            return
                    pause = resume.ended()
            except SSEError as exc:
                raise not_a_stream(self.url, exc) from None
            except (httpx.TransportError, Dropped) as exc:
                pause = resume.dropped(exc)
            time.sleep(pause)
