"""``AsyncClient``: ``Client`` for asyncio programs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

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

__all__ = ["AsyncClient"]


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
            base_url=self.url, headers=headers(auth_key), timeout=timeout, transport=transport
        )
        self._features: frozenset[str] | None = None  # GET /info's, once asked

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
            raise unreachable(self.url, exc) from None

    async def health(self) -> dict[str, Any]:
        return document(await self.request("GET", "/health"))

    async def info(self) -> dict[str, Any]:
        doc = document(await self.request("GET", "/info"))
        self._features = features_of(doc)
        return doc

    async def offers(self, feature: str) -> bool:
        """``Client.offers``."""
        if self._features is None:
            await self.info()
        return feature in (self._features or ())

    async def invoke(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> InvokeResult:
        body = invoke_body(parameters, capture, sample_rate, timeout_s)
        return result(await self.request("POST", "/invoke", json=body))

    async def submit(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``Client.submit``."""
        body = invoke_body(parameters, capture, sample_rate, timeout_s)
        response = await self.request("POST", "/invoke", params={"mode": "async"}, json=body,
                                      headers=idempotency_header(idempotency_key))  # fmt: skip
        return document(response)

    async def invoke_stream(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        capture: str | None = None,
        sample_rate: float | None = None,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """``Client.invoke_stream``, as an async iterator."""
        body = invoke_body(parameters, capture, sample_rate, timeout_s)
        if not await self.offers(INVOKE_STREAM):
            async for followed in self._submit_and_follow(body):
                yield followed
            return
        job_id, after = None, 0
        try:
            async with aconnect_sse(self._http, "POST", "/invoke", json=body) as source:
                response = source.response
                if response.is_error or not is_event_stream(response):
                    await response.aread()
                    for answered in answered_events(response):
                        yield answered
                    return
                job_id = response.headers.get("x-job-id")
                async for sse in source.aiter_sse():
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

    async def _submit_and_follow(
        self, body: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        response = await self.request("POST", "/invoke", params={"mode": "async"}, json=body)
        job_id = document(response)["job_id"]
        ended = False
        try:
            async for doc in self.events(job_id):
                ended = doc.get("event") in TERMINAL
                yield doc
        finally:
            if not ended:  # left early: the invocation ends with its stream, as with a new server
                with contextlib.suppress(ZServeError):
                    await self.cancel(job_id)

    async def job(self, job_id: str) -> dict[str, Any]:
        return document(await self.request("GET", job_path(job_id)))

    async def jobs(
        self,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        *,
        prefix: str | None = None,
    ) -> dict[str, Any]:
        query = jobs_query(status, limit, cursor, prefix)
        return document(await self.request("GET", "/jobs", params=query))

    async def runs(
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
        return document(await self.request("GET", "/runs", params=query))

    async def run(self, run_id: str) -> dict[str, Any]:
        """One recorded run: steps with timings, values as captured (``NotFound`` if none)."""
        return document(await self.request("GET", run_path(run_id)))

    async def artifact(self, run_id: str, artifact_id: str) -> bytes:
        """The content of one captured value (JSON text, or the bytes a step returned)."""
        response = await self.request("GET", run_path(run_id, f"/artifacts/{artifact_id}"))
        if response.is_error:
            raise error_from_response(response)
        return response.content

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return document(await self.request("POST", job_path(job_id, "/cancel")))

    async def events(
        self,
        job_id: str,
        last_event_id: int | None = None,
        *,
        retries: int = STREAM_RETRIES,
        reconnect_s: float = RECONNECT_S,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """``Client.events``, as an async iterator."""
        resume = Resume(self.url, job_id, last_event_id, retries, reconnect_s)
        while True:
            try:
                async with aconnect_sse(
                    self._http, "GET", stream_path(job_id), headers=resume.headers()
                ) as source:
                    if source.response.is_error:
                        await source.response.aread()
                    if resume.opened(source.response):
                        return  # the job had ended: nothing after `after`
                    async for sse in source.aiter_sse():
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
            await asyncio.sleep(pause)
