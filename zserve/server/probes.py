"""The probes of a host, answered from this process's own state alone, never from the broker or
the store (a Redis or PostgreSQL that is down must not get every host restarted or taken out
of its load balancer at once):

- ``GET /livez``: 200 while the process and its event loop live (an answer is the proof),
  starting and draining included. For a liveness probe: it fails only when the process is
  stuck or gone.
- ``GET /readyz``: 200 while this worker takes requests, 503 while it starts (resources being
  built), drains or has failed. For a readiness probe and a load balancer.

``/health`` keeps its meaning (and its ``degraded`` state, when the broker or the store cannot
be written); all three answer any Host without an auth key (``guard.EXEMPT_PATHS``,
``middleware.OPEN_PATHS``).

``StoreReach`` tells ``/status`` whether the store answers, from the run writer's own checks
when it has made any, else from a read of the schema revision of its own (one at a time, its
verdict kept a few seconds).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from zserve.errors import ZServeError

if TYPE_CHECKING:
    from zserve.server.writer import RunWriter

__all__ = ["PROBE_PATHS", "StoreReach", "probe_routes"]

#: The probes' paths: like /health, open to any Host and without the auth key.
PROBE_PATHS = frozenset({"/livez", "/readyz"})
#: How long a verdict of ``StoreReach``'s own check stands (seconds).
REACH_CACHE_S = 5.0
#: The longest ``/status`` waits for that check (PostgreSQL's connect timeout is 5 s).
REACH_WAIT_S = 6.0
JSON = "application/json"


def probe_routes(host_id: str, phase: Callable[[], str]) -> list[Route]:
    """``GET /livez`` and ``GET /readyz`` (and their HEAD), as plain Starlette routes run on the
    event loop: no thread, no dependency solving. ``phase``: ``Service.phase``, ``ready`` or
    why not."""
    alive = to_json({"status": "alive", "host_id": host_id, "pid": os.getpid()})
    ready = to_json({"status": "ready", "host_id": host_id})

    async def livez(request: Request) -> Response:
        return Response(alive, media_type=JSON)

    async def readyz(request: Request) -> Response:
        now = phase()
        if now == "ready":
            return Response(ready, media_type=JSON)
        body = to_json({"status": now, "host_id": host_id})
        return Response(body, status_code=503, media_type=JSON)

    return [Route("/livez", livez, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]


class StoreReach:
    """Whether the store at ``url`` answers: ``{"reachable": bool, "problem": str | None}``."""

    def __init__(self, url: str, writer: RunWriter) -> None:
        self.url = url
        self.writer = writer
        self._verdict: dict[str, Any] | None = None
        self._at = 0.0
        self._checking: asyncio.Future[dict[str, Any]] | None = None

    async def state(self) -> dict[str, Any]:
        writer = self.writer
        if writer.checked:  # the writer's thread checks it while it writes, each second failing
            failing = writer.failing
            return {"reachable": failing is None, "problem": failing}
        if self._verdict is not None and time.monotonic() - self._at < REACH_CACHE_S:
            return self._verdict
        if self._checking is None or self._checking.done():
            loop = asyncio.get_running_loop()
            self._checking = loop.run_in_executor(None, self._check)
        try:
            return await asyncio.wait_for(asyncio.shield(self._checking), REACH_WAIT_S)
        except TimeoutError:
            return {"reachable": False, "problem": f"No answer within {REACH_WAIT_S:g} s"}

    def _check(self) -> dict[str, Any]:
        """(in a thread) Read the schema revision: creates and changes nothing."""
        from zserve.store.revision import revision_at

        try:
            revision_at(self.url)
            verdict: dict[str, Any] = {"reachable": True, "problem": None}
        except Exception as err:  # never an error of /status: a verdict
            why = str(err) if isinstance(err, ZServeError) else f"{type(err).__name__}: {err}"
            verdict = {"reachable": False, "problem": why}
        self._verdict, self._at = verdict, time.monotonic()
        return verdict
