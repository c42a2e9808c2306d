"""``GuardedHttpTools``: uvicorn's httptools protocol with the limits it lacks, set before any
request reaches the app (and so before auth):

- a request head (request line and headers) over ``max_header_bytes``, or with more than
  ``max_headers`` headers, is answered 431 and the connection closed — the bytes are counted as
  they arrive, so a 185 MB header is never buffered (at most the limit and 64 KiB);
- a connection must complete each request head within ``header_timeout_s`` of its first byte
  (and send a first request within that time of connecting): slowloris sockets are closed;
- at most ``max_connections`` connections per worker: a new one over the cap closes the idle
  keep-alive connection that waited longest, or, when none is idle, is itself closed — so
  ``/health`` keeps answering while idle sockets pile up.

Each limit logs one warning line when it trips (at most one per limit every 10 seconds).

It also sends the answer of ``POST /invoke`` in one write (``OneWrite``, given to the request's
``RequestResponseCycle`` as its ``transport``): head and body in one TCP segment, one system call
a request fewer.

A thin subclass of ``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`` (uvicorn 0.30 to
0.54 have the hooks it uses: ``connection_made``, ``data_received``, ``on_message_begin``,
``on_headers_complete``, ``on_response_complete``, ``connection_lost``; it adds no call per
header); tests/e2e/test_limits.py fails when they change.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GuardedHttpTools", "Limits", "OneWrite", "configure", "hand_off_connections"]

logger = logging.getLogger("zserve.server")


class Limits:
    """The limits of every connection of a worker (set from Settings at start)."""

    max_header_bytes = 64 * 1024
    max_headers = 100
    header_timeout_s = 10.0
    max_connections = 4096
    _warned: dict[str, float] = {}  # noqa: RUF012 (one per worker process)
    #: the worker's open connections (uvicorn's set, the same for all), once one is made
    connections: set[Any] = set()  # noqa: RUF012 (one per worker process)

    @classmethod
    def warn(cls, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - cls._warned.get(kind, -60.0) >= 10.0:
            cls._warned[kind] = now
            logger.warning(message, *args)


def configure(
    max_header_bytes: int, max_headers: int, header_timeout_s: float, max_connections: int
) -> None:
    """Set this worker's limits; ``max_connections`` 0 = what the open-file limit allows."""
    Limits.max_header_bytes = max_header_bytes
    Limits.max_headers = max_headers
    Limits.header_timeout_s = header_timeout_s
    if max_connections <= 0:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        room = soft - 128 if soft != resource.RLIM_INFINITY else 4096
        max_connections = max(64, min(4096, room))
    Limits.max_connections = max_connections


def hand_off_connections() -> None:
    """Close the worker's keep-alive connections: idle ones now, the others once their answer
    is complete (as uvicorn's own shutdown does), so that their clients' next requests open new
    connections, which a load balancer sends to another host (``server/handoff.py``)."""
    for conn in list(Limits.connections):
        if isinstance(conn, GuardedHttpTools):  # not a WebSocket: those close on their own
            conn.shutdown()


class OneWrite:
    """The transport of a response its app sends whole at once (``POST /invoke``): the head
    uvicorn writes is held until the body comes, and both leave in one write — one ``send()``
    system call and one TCP segment, not two. Only a response's head is held (``head_next``,
    set again when a response is complete): what follows the first body write leaves at once,
    so an event stream (``Accept: text/event-stream``) is never held back. A ``100 Continue``
    is not held; ``close()`` sends what is held first."""

    __slots__ = ("head_next", "held", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: bytes | None = None
        self.head_next = True

    def write(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held + data)
        elif self.head_next and not data.startswith(b"HTTP/1.1 100 "):
            self.head_next = False
            self.held = data
        else:
            self.transport.write(data)

    def close(self) -> None:
        if self.held is not None:
            self.write(b"")
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class GuardedHttpTools(HttpToolsProtocol):
    _one_write: OneWrite | None = None
    _head_bytes = 0
    _heads = 0  # request heads read whole on this connection
    _in_head = False
    _head_timer: asyncio.TimerHandle | None = None
    _idle_since = 0.0

    # -- connections ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        Limits.connections = self.connections
        self._idle_since = time.monotonic()
        self._arm_head_timer()
        if len(self.connections) > Limits.max_connections:
            self._make_room()

    def _make_room(self) -> None:
        idle = [
            c
            for c in self.connections
            if isinstance(c, GuardedHttpTools) and c is not self and c._idle()
        ]
        if idle:
            oldest = min(idle, key=lambda c: c._idle_since)
            oldest.transport.close()
            Limits.warn(
                "connections",
                "Connection limit (%d per worker, ZSERVE_MAX_CONNECTIONS) reached: closing the "
                "longest idle keep-alive connections to make room",
                Limits.max_connections,
            )
            return
        Limits.warn(
            "connections",
            "Connection limit (%d per worker, ZSERVE_MAX_CONNECTIONS) reached and none is idle: "
            "refusing new connections",
            Limits.max_connections,
        )
        self.transport.close()

    def _idle(self) -> bool:
        """Waiting for a next request on a kept-alive connection (not mid-request)."""
        return not self._in_head and (self.cycle is None or self.cycle.response_complete)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    # -- request heads -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if not (self._in_head or cycle is None or cycle.response_complete):
            super().data_received(data)  # a body: nothing to count
            return
        self._in_head = True
        room = Limits.max_header_bytes + 65536 - self._head_bytes  # far past: stop reading
        if len(data) > room:
            # A read of a small head with a large body after it: parse up to the bound, and
            # what follows only if the head ended within it.
            self._head_bytes += room
            heads = self._heads
            super().data_received(data[:room])
            if self._heads == heads:  # no head ended within the bound
                self._refuse_head(f"over {Limits.max_header_bytes} bytes")
            elif not self.transport.is_closing() and self.transport.get_protocol() is self:
                self.data_received(data[room:])
            return
        self._head_bytes += len(data)
        super().data_received(data)
        # a head that did not come whole in one read gets a deadline (most come whole)
        if self._in_head and self._head_timer is None and not self.transport.is_closing():
            self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        if len(self.headers) > Limits.max_headers:
            self._refuse_head(f"over {Limits.max_headers} headers")
            return
        if self._head_bytes > Limits.max_header_bytes:  # what was read bounds the head's size
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > Limits.max_header_bytes:
                self._refuse_head(f"over {Limits.max_header_bytes} bytes")
                return
        self._in_head = False
        self._head_bytes = 0
        self._heads += 1
        if self._head_timer is not None:
            self._disarm_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.scope["path"] == "/invoke"
            and cycle.scope["method"] == "POST"
        ):
            if self._one_write is None:
                self._one_write = OneWrite(self.transport)
            cycle.transport = self._one_write  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        one_write = self._one_write
        if one_write is not None:
            if one_write.held is not None:
                one_write.write(b"")  # an answer with no body (HEAD): its head
            # the next answer's head is held, not sooner: a pipelined request read while an
            # event stream is answered must not hold that stream's next event
            one_write.head_next = True
        super().on_response_complete()

    def _refuse_head(self, what: str) -> None:
        if self.transport.is_closing():
            return
        Limits.warn(
            "headers",
            "Refused a request head with %s (431; ZSERVE_MAX_HEADER_BYTES, ZSERVE_MAX_HEADERS)",
            what,
        )
        body = f"Request header fields too large: {what}".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
            b"charset=utf-8\r\nconnection: close\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        self.transport.close()

    # -- the head timer ------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(Limits.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head or (self.cycle is None and not self.transport.is_closing()):
            Limits.warn(
                "slow",
                "Closed connections that sent no complete request head within %g s "
                "(ZSERVE_HEADER_TIMEOUT_S)",
                Limits.header_timeout_s,
            )
            self.transport.close()
