"""The streaming vocabulary: what happens to a job, in order, and its JSON form.

For one job: ``job.queued``, ``job.started``, then per step ``step.started``, ``step.chunk``*
(items a generator step yields), ``step.progress``* (``get_context().emit``), ``step.completed``
or ``step.failed``, then exactly one terminal event: ``job.completed`` (with outputs),
``job.failed`` (with an error: reason, step?, message) or ``job.cancelled``.

Every event carries ``job_id``, ``seq`` (1, 2, 3, ... per job, assigned by the broker), ``ts``
(Unix time) and ``step`` where it applies. Standard library only (and ``zserve.records``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from zserve.records import JobStatus

__all__ = [
    "JOB_CANCELLED",
    "JOB_COMPLETED",
    "JOB_FAILED",
    "JOB_QUEUED",
    "JOB_STARTED",
    "STEP_CHUNK",
    "STEP_COMPLETED",
    "STEP_FAILED",
    "STEP_PROGRESS",
    "STEP_STARTED",
    "TERMINAL",
    "TERMINAL_EVENT",
    "Event",
]

JOB_QUEUED: Final = "job.queued"
JOB_STARTED: Final = "job.started"
STEP_STARTED: Final = "step.started"
STEP_CHUNK: Final = "step.chunk"
STEP_PROGRESS: Final = "step.progress"
STEP_COMPLETED: Final = "step.completed"
STEP_FAILED: Final = "step.failed"
JOB_COMPLETED: Final = "job.completed"
JOB_FAILED: Final = "job.failed"
JOB_CANCELLED: Final = "job.cancelled"

#: Terminal event type -> the job status it leaves.
TERMINAL: Final[dict[str, JobStatus]] = {
    JOB_COMPLETED: JobStatus.COMPLETED,
    JOB_FAILED: JobStatus.FAILED,
    JOB_CANCELLED: JobStatus.CANCELLED,
}
#: Job status -> the terminal event that leaves it.
TERMINAL_EVENT: Final[dict[JobStatus, str]] = {status: kind for kind, status in TERMINAL.items()}


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    job_id: str
    ts: float
    step: str | None = None
    #: Type-specific members: ``chunk``, ``progress``, ``duration_ms``, ``outputs``, ``error``...
    data: dict[str, Any] = field(default_factory=dict)
    #: 0 until the broker has placed the event in the job's sequence.
    seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL

    def with_seq(self, seq: int) -> Event:
        return Event(self.type, self.job_id, self.ts, self.step, self.data, seq)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"event": self.type, "job_id": self.job_id, "seq": self.seq,
                               "ts": self.ts}  # fmt: skip
        if self.step is not None:
            doc["step"] = self.step
        doc.update(self.data)
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=repr)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Event:
        rest = {k: v for k, v in doc.items() if k not in ("event", "job_id", "seq", "ts", "step")}
        return cls(doc["event"], doc["job_id"], doc["ts"], doc.get("step"), rest, doc["seq"])
