"""Handing a draining host's stream clients over to another host.

On a broker that many hosts share (``Broker.multi_host``: Redis), a job's events are readable
from every host, so a host that drains (SIGTERM, Ctrl-C) need not hold its stream clients until
their jobs end: it tells them to reconnect, and the load balancer sends them to another host,
where ``Last-Event-ID`` (SSE) or ``{"job_id", "after"}`` (WebSocket) resumes each one after the
last event it had. The jobs themselves still run here, up to the grace period, writing their
events to the broker, so the reconnected clients see them to the end.

When the handoff begins (``Handoff.begin``, from the drain), every stream that follows a broker
job stops at its next step (``Handoff.until`` raises ``HandedOff``): an SSE stream sends
``HANDOFF`` (``retry: 500`` after a comment, no event) and ends, a WebSocket closes with 1012
(service restart). A stream opened afterwards on this host gets the same at once. The host's
keep-alive connections close (idle ones now, busy ones once their answer is complete), so a
client's next request opens a new connection, which the balancer gives to another host.

What does not change: streams of a finished job (everything is stored: they end by themselves),
and streams of this worker's own streamed invocations (``POST /invoke`` with ``Accept:
text/event-stream``, and attaching to one), whose jobs live only here and end with their
terminal event as before. With a local broker (memory, or SQLite, which only the workers of one
host share and which all stop together) nothing is handed over either.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

from zserve.server.protocol import hand_off_connections

__all__ = ["HANDOFF", "HANDOFF_REASON", "HANDOFF_RETRY_MS", "HandedOff", "Handoff"]

T = TypeVar("T")

#: How long (ms) a handed-over SSE client waits before it reconnects.
HANDOFF_RETRY_MS = 500
#: The end of a handed-over SSE stream: a comment for people reading it, and the retry delay.
HANDOFF = (
    b": this server is stopping: reconnect with Last-Event-ID\n"
    + f"retry: {HANDOFF_RETRY_MS}\n\n".encode()
)
#: The close reason of a handed-over WebSocket (code 1012, service restart).
HANDOFF_REASON = 'This server is stopping: reattach with {"job_id", "after"}'


class HandedOff(Exception):
    """A stream must end here: its client resumes on another host."""


class Handoff:
    """Whether this host's stream clients are told to go to another host (``enabled``: the
    broker is shared by many hosts), and whether that has begun (``begun``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.begun = False
        #: one per stream that follows a broker job: set when the handoff begins
        self._waiters: set[asyncio.Future[None]] = set()

    def begin(self) -> None:
        """Hand the streams over (on the event loop; once; nothing when not ``enabled``)."""
        if not self.enabled or self.begun:
            return
        self.begun = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        hand_off_connections()

    def until(self, events: AsyncIterator[T]) -> AsyncIterator[T]:
        """``events`` until the handoff begins, then ``HandedOff`` (at once if it has begun).
        ``events`` as they are when nothing is ever handed over."""
        return self._until(events) if self.enabled else events

    async def _until(self, events: AsyncIterator[T]) -> AsyncIterator[T]:
        begun: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(begun)
        step: asyncio.Future[T] | None = None
        try:
            while not self.begun:
                step = asyncio.ensure_future(anext(events))
                await asyncio.wait((step, begun), return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    break
                try:
                    item = step.result()
                except StopAsyncIteration:
                    return
                step = None
                yield item
            raise HandedOff
        finally:
            self._waiters.discard(begun)
            if step is not None and not step.done():
                step.cancel()  # stops following the broker
