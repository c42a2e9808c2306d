"""``/runs``: the runs this server's deployment recorded, read back from the store.

The handlers are plain ``def``: FastAPI runs them in its thread pool, so the store is never
read on the event loop. The store is opened on the first request (a worker nobody asks about
runs never imports SQLAlchemy), and shared by later ones.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Query
from starlette.responses import Response

from zserve.errors import RunNotFound, UsageError
from zserve.records import CaptureMode, RunRecord
from zserve.settings import parse_duration

if TYPE_CHECKING:
    from zserve.server.service import Service

__all__ = ["add_run_routes", "parse_since"]

RunStatus = Literal["completed", "failed", "cancelled"]


def parse_since(text: str) -> float:
    """``since``: an ISO 8601 time (``2026-11-29T10:00:00Z``) or an age (``7d``, ``12h``)."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text, what="since")
    except UsageError:
        raise UsageError(
            f"Invalid since {text!r}: use an ISO 8601 time (2026-11-29T10:00:00Z) or an age "
            "(90s, 15m, 12h, 7d, 2w)"
        ) from None


def add_run_routes(app: FastAPI, service: Service) -> None:
    store = service.run_reader
    deployment = service.record.id

    def _mine(run_id: str) -> RunRecord:
        run = store().get_run(run_id)
        if run.deployment_id != deployment:
            raise RunNotFound(f"No run {run_id!r} of this deployment: `zserve runs list` shows all")
        return run

    @app.get("/runs", summary="Recorded runs of this deployment, newest first")
    def list_runs(
        status: RunStatus | None = None,
        capture: CaptureMode | None = None,
        since: str | None = Query(None, description="ISO 8601 time, or an age such as 7d"),
        limit: int = Query(100, ge=1, le=500),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        after = parse_since(since) if since else None
        runs, next_cursor = store().list_runs(
            deployment_id=deployment, status=status, capture=capture, since=after,
            limit=limit, cursor=cursor,
        )  # fmt: skip
        doc: dict[str, Any] = {"runs": [r.to_dict() for r in runs]}
        if next_cursor is not None:
            doc["next"] = next_cursor
        return doc

    @app.get("/runs/{run_id}", summary="One recorded run: steps, timings, values as captured")
    def get_run(run_id: str) -> dict[str, Any]:
        return _mine(run_id).to_dict()

    @app.get("/runs/{run_id}/artifacts/{artifact_id}", summary="Download one captured value")
    def get_artifact(run_id: str, artifact_id: str) -> Response:
        _mine(run_id)
        artifact, content = store().read_artifact(run_id, artifact_id)
        headers = {"X-Content-SHA256": artifact.sha256}
        if artifact.truncated:
            headers["X-Truncated"] = "true"
        return Response(content, media_type=artifact.content_type, headers=headers)
