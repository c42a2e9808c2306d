"""``Resume``: where ``Client.events`` (and ``AsyncClient.events``) is in a job's event stream,
and whether and when to reconnect — the same decisions for both clients.

A stream is resumed with ``Last-Event-ID`` = the last ``seq`` it yielded, and events at or
before it are skipped, so none is ever yielded twice. It is resumed when:

- the server ends it before the job's terminal event: a host that stops hands its clients over
  to another host behind the load balancer (``retry:``, then the end). The client waits the
  server's ``retry:`` delay and reconnects, again and again while events keep coming, and gives
  up after ``reconnect_s`` seconds without a new event;
- the connection drops, or a resume is answered 502, 503 or 504 (a balancer whose host has just
  gone, a host still starting): ``retries`` times in a row, ``RETRY_BACKOFF_S`` x 1, 2, 4, ...
  apart; any new event starts the count again.

A server that never answered is ``ServerUnreachable`` at once, and an error answer to the first
request (404, 401...) is raised as it is.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from zserve.client._common import error_from_response, sse_event, stream_ended, unreachable

__all__ = ["RECONNECT_S", "RETRY_BACKOFF_S", "STREAM_RETRIES", "Resume"]

#: Reconnect this many times in a row when the stream drops...
STREAM_RETRIES = 3
#: ...waiting this x 1, 2, 4, ... between tries.
RETRY_BACKOFF_S = 0.25
#: Resume a stream the server ended early (``retry:``) for up to this long without an event.
RECONNECT_S = 30.0
#: Answers to a resume that pass: a balancer whose host has just gone, a host still starting.
TRANSIENT = frozenset({502, 503, 504})


class Resume:
    """One followed stream: its last event, and how its reconnections go (see the module)."""

    def __init__(
        self, url: str, job_id: str, after: int | None, retries: int, reconnect_s: float
    ) -> None:
        self.url = url
        self.job_id = job_id
        #: the seq of the last event yielded (``Last-Event-ID`` of the next request)
        self.after = after or 0
        self.retries = retries
        self.reconnect_s = reconnect_s
        #: a server answered with a stream once: later failures are a dropped stream
        self.connected = False
        self._failures = 0
        self._retry_s: float | None = None  # the server's latest ``retry:``
        self._progress = time.monotonic()

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.after)} if self.after else {}

    def opened(self, response: httpx.Response) -> bool:
        """A stream answered: True when the job has ended and nothing is left (204). An error
        answer raises its error, unless it is ``TRANSIENT`` to a resume (then ``Dropped``)."""
        if response.is_error:
            if self.connected and response.status_code in TRANSIENT:
                raise Dropped(f"answered {response.status_code} {response.reason_phrase}")
            raise error_from_response(response)
        self.connected = True
        return response.status_code == 204

    def event(self, sse: ServerSentEvent) -> dict[str, Any] | None:
        """The event of one SSE block; None for one with no event (a ``retry:`` alone) or an
        event yielded already."""
        if sse.retry is not None:
            self._retry_s = sse.retry / 1000
        doc = sse_event(sse.data)
        if doc is None or int(doc.get("seq", 0)) <= self.after:
            return None
        self.after, self._failures = int(doc["seq"]), 0
        self._progress = time.monotonic()
        return doc

    def ended(self) -> float:
        """The server ended the stream before the job's end: how long to wait before
        resuming, or ``ServerError`` after ``reconnect_s`` without an event."""
        if time.monotonic() - self._progress > self.reconnect_s:
            raise stream_ended(self.url, self.job_id, self.after,
                               f"no event for {self.reconnect_s:g} s of reconnecting")  # fmt: skip
        return RETRY_BACKOFF_S if self._retry_s is None else self._retry_s

    def dropped(self, exc: httpx.TransportError | Dropped) -> float:
        """The connection dropped (or a resume was refused for now): how long to wait before
        resuming, or the error once ``retries`` tries in a row have failed."""
        if isinstance(exc, httpx.ConnectError) and not self.connected:
            raise unreachable(self.url, exc) from None
        self._failures += 1
        if self._failures > self.retries:
            cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, Dropped):
                cause = str(exc)
            raise stream_ended(self.url, self.job_id, self.after, cause) from None
        return RETRY_BACKOFF_S * float(2 ** (self._failures - 1))


class Dropped(Exception):
    """A resume refused for now (``TRANSIENT``): tried again as a dropped connection is."""
