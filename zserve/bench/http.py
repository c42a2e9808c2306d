"""The load generator's HTTP/1.1 connection: keep-alive, one request in flight, the request's
bytes built once, answers parsed by httptools (the parser uvicorn uses). What a general client
does per request (URL, header and response objects, a state machine in Python) would make the
client slower than the server it measures.

``Connection.request`` returns the status, the body and the ``Server-Timing`` header; for an
event stream it also notes when the first event other than ``job.queued`` arrived.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

__all__ = ["Answer", "Connection", "Target", "build_request"]


@dataclass(frozen=True)
class Target:
    """Where requests go: host, port, TLS, and the path prefix of the server's URL."""

    host: str
    port: int
    tls: bool
    prefix: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        return cls(host, parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def build_request(
    target: Target, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of one request, sent as they are for every request."""
    lines = [f"{method} {target.prefix}{path} HTTP/1.1", f"Host: {target.authority}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Answer:
    status: int
    body: bytes
    #: the ``Server-Timing`` header, if the answer had one
    timing: bytes | None
    #: ``time.perf_counter()`` when the request was written and when the answer was whole
    #: (taken in the protocol's callbacks, as wrk does, not when the waiting task resumes)
    sent: float = 0.0
    done: float = 0.0
    #: ``time.perf_counter()`` when the first event after ``job.queued`` arrived (streams)
    first_event: float | None = None


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends bytes and waits for the whole answer."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[Answer] | None = None
        self._body: list[bytes] = []
        self._timing: bytes | None = None
        self._first_event: float | None = None
        self._sent = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, target: Target, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if target.tls else None
        _, conn = await asyncio.wait_for(
            loop.create_connection(cls, target.host, target.port, ssl=context), timeout
        )
        return conn

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"invalid HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the server closed the connection"))

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            self._timing = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        if self._first_event is None and b"event: " in body:
            for line in body.split(b"\n"):
                if line.startswith(b"event: ") and line != b"event: job.queued":
                    self._first_event = time.perf_counter()
                    break

    def on_message_complete(self) -> None:
        done = time.perf_counter()
        status = self.parser.get_status_code()
        answer = Answer(status, b"".join(self._body), self._timing, self._sent, done,
                        self._first_event)  # fmt: skip
        self._body, self._timing, self._first_event = [], None, None
        if not self.parser.should_keep_alive():
            self.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)

    # -- use --------------------------------------------------------------------------------------

    async def request(self, data: bytes, timeout: float) -> Answer:
        """Send ``data``; the answer, or TimeoutError after ``timeout`` seconds."""
        return await self.send(data, timeout)

    def send(self, data: bytes, timeout: float) -> asyncio.Future[Answer]:
        """Send ``data`` now; the future of its answer (TimeoutError after ``timeout``
        seconds: a timer on the loop, not ``asyncio.wait_for``'s task per request)."""
        if self.closed or self.transport is None:
            raise ConnectionError("the connection is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        self._waiter = waiter
        self._timer = loop.call_later(timeout, self._time_out, waiter)
        self._sent = time.perf_counter()
        self.transport.write(data)
        return waiter

    def _time_out(self, waiter: asyncio.Future[Answer]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
