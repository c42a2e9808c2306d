"""A job: one invocation of a pipeline, its state and its steps' states (plain data)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["FINISHED", "JOB_STATES", "JobRecord", "iso"]

JOB_STATES = ("queued", "running", "completed", "failed", "cancelled")
FINISHED = frozenset({"completed", "failed", "cancelled"})


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(slots=True)
class JobRecord:
    job_id: str
    created_at: float
    status: str = "queued"
    #: "sync" (lives in its worker's memory only), "async" or "stream" (through the broker)
    mode: str = "async"
    capture: str = "none"
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] | None = None
    #: a failed job's {"reason": step_failed|timeout|worker_lost|shutdown|failed, "step"?,
    #: "message"}; "failed" is any other ExecutionFailed (e.g. outputs that do not match)
    error: dict[str, Any] | None = None
    run_id: str | None = None
    #: [{"name", "status": pending|running|completed|failed|cancelled, "duration_ms"}]
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: The worker that runs the job (its lease); empty while nobody has picked it up.
    worker: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_row(self) -> dict[str, Any]:
        """Everything, as JSON-able data (what a broker stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        return cls(**row)

    def to_dict(self) -> dict[str, Any]:
        """The API form (``GET /jobs/{id}``)."""
        doc: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "mode": self.mode,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "capture": self.capture,
            "run_id": self.run_id,
            "steps": self.steps,
        }
        if self.outputs is not None:
            doc["outputs"] = self.outputs
        if self.error is not None:
            doc["error"] = self.error
        if self.worker:
            doc["worker"] = self.worker
        return doc
