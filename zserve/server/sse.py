"""Server-Sent Events framing, shared by ``GET /stream/{id}`` (``streaming``) and the event
stream of ``POST /invoke`` (``invoke_stream``)."""

from __future__ import annotations

from zserve.events import Event

__all__ = ["PING", "SSE_HEADERS", "SSE_RETRY", "sse"]

#: Sent with the first event of every SSE stream (in its block: a block of its own would be an
#: event without data to some clients): how long (ms) an EventSource waits to reconnect.
SSE_RETRY = b"retry: 2000\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: A comment, sent while nothing happens: proxies and clients see the stream is alive.
PING = b": ping\n\n"


def sse(event: Event) -> bytes:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event.to_json()}\n\n".encode()
