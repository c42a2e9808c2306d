"""The records every layer shares, and their one vocabulary: plain data, standard library only.

``JobRecord`` is one invocation and its steps' states (what a broker stores and ``GET /jobs/{id}``
answers); ``DeploymentRecord`` is one stored deployment (what the store keeps and a parent hands
its workers). ``JobStatus``, ``StepStatus``, ``JobError`` and ``CaptureMode`` are the only
definitions of those words: the broker, the jobs layer, the server, the metrics and the CLI all
import them from here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict, get_args

__all__ = [
    "CAPTURE_MODES",
    "FINISHED",
    "ArtifactRecord",
    "CaptureMode",
    "DeploymentRecord",
    "ErrorReason",
    "JobError",
    "JobMode",
    "JobRecord",
    "JobStatus",
    "RunRecord",
    "StepRun",
    "StepState",
    "StepStatus",
    "iso",
    "new_id",
    "new_job_id",
    "new_request_id",
]

CaptureMode = Literal["none", "metadata", "full", "sampled", "errors_only"]
CAPTURE_MODES: tuple[CaptureMode, ...] = get_args(CaptureMode)


class JobStatus(StrEnum):
    """Where a job is: ``queued`` -> ``running`` -> one of the three finished states."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


#: The terminal states: a job that reaches one never leaves it.
FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepState(TypedDict):
    """One step of a job, as ``GET /jobs/{id}`` lists it."""

    name: str
    status: StepStatus
    duration_ms: float | None


#: Why a job failed: a step raised, it ran out of time, its worker died, the server shut down
#: first, the store could not keep the record its capture mode requires, or anything else that
#: failed the run (``failed``: e.g. outputs that do not match).
ErrorReason = Literal[
    "step_failed",
    "timeout",
    "worker_lost",
    "shutdown",
    "store_unavailable",
    "broker_unavailable",
    "failed",
    "error",
]


class JobError(TypedDict):
    """A failed job's ``error`` (also the ``error`` of its ``job.failed`` event)."""

    reason: ErrorReason
    message: str
    step: NotRequired[str]


#: "sync" lives in its worker's memory only; "async" and "stream" go through the broker.
JobMode = Literal["sync", "async", "stream"]


def new_id() -> str:
    """A new run or artifact id: a UUID version 7 (RFC 9562), so ids sort by creation time.
    Stored ids then go to the end of their indexes instead of random pages, which keeps a
    store's commits small. Its first characters are the time: the last ones tell runs apart
    (``zserve runs list`` shows them, and ``runs show`` accepts them)."""
    return _uuid((time.time_ns() // 1_000_000) << 80 | _bits(80), 7)


def new_job_id() -> str:
    """A new job id: a random UUID version 4 whose first characters tell jobs apart. Job ids
    are listed by ``GET /jobs``: they are names, not secrets."""
    return _uuid(_bits(128), 4)


def new_request_id() -> str:
    """A new request id (``X-Request-ID``): 16 hex digits."""
    return f"{_bits(64):016x}"


def _uuid(value: int, version: int) -> str:
    """128 bits as a UUID string of ``version`` (RFC 9562 variant)."""
    h = f"{value & _VERSION_VARIANT | version << 76 | 0x2 << 62:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: Ids come from zserve's own generator, not os.urandom: no system call (which would hand the
#: GIL to another thread on every request), and a pipeline that calls random.seed() cannot make
#: ids repeat. Seeded from the OS once, and again in every forked child.
_rng = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))
_bits = _rng.getrandbits
#: Every bit but the version and the variant.
_VERSION_VARIANT = ~((0xF << 76) | (0x3 << 62)) & (2**128 - 1)


def iso(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(slots=True)
class JobRecord:
    job_id: str
    created_at: float
    status: JobStatus = JobStatus.QUEUED
    mode: JobMode = "async"
    capture: str = "none"
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] | None = None
    error: JobError | None = None
    run_id: str | None = None
    steps: list[StepState] = field(default_factory=list)
    #: The worker that runs the job (its lease); empty while nobody has picked it up.
    worker: str = ""
    #: The mode the request asked for, when the server's ceiling or off-switch lowered it.
    capture_requested: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def summary(self) -> JobRecord:
        """A copy without outputs (what listings give), its steps copied too."""
        return dataclasses.replace(self, outputs=None, steps=[s.copy() for s in self.steps])

    def to_row(self) -> dict[str, Any]:
        """Everything, as JSON-able data (what a broker stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        record = cls(**row)
        record.status = JobStatus(record.status)
        return record

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
        if self.capture_requested is not None:
            doc["capture_requested"] = self.capture_requested
        if self.outputs is not None:
            doc["outputs"] = self.outputs
        if self.error is not None:
            doc["error"] = self.error
        if self.worker:
            doc["worker"] = self.worker
        return doc


@dataclass(frozen=True)
class DeploymentRecord:
    """One stored deployment (a version of a named pipeline). Plain data: JSON round-trips."""

    id: str
    name: str
    version: int
    #: "package.module:attr" or "/absolute/path/file.py:attr"
    source: str
    #: Absolute directory put on sys.path before the source is imported.
    import_root: str
    pipeline_name: str
    #: sha256 over the sorted file hashes.
    code_hash: str
    #: Absolute path of every file that defines the pipeline or one of its steps -> sha256.
    file_hashes: dict[str, str] = field(default_factory=dict)
    #: The compiled pipeline's description: steps, parameters (both forms), outputs.
    spec: dict[str, Any] = field(default_factory=dict)
    #: The pipeline's own settings (``@pipeline(settings=...)``).
    settings: dict[str, Any] = field(default_factory=dict)
    capture_default: str = "none"
    #: ISO 8601, UTC.
    created_at: str = ""
    #: SHA-256 address of the deployment's code snapshot; None for a deployment made before
    #: snapshots (or whose code is all in installed packages): it is served from ``source``.
    code_archive: str | None = None
    #: What the snapshot was built against: {"python", "packages": {dist: version}, "include"}.
    environment: dict[str, Any] = field(default_factory=dict)
    #: Where the snapshot is extracted, in a record being served (never stored).
    code_dir: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentRecord:
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> DeploymentRecord:
        return cls.from_dict(json.loads(text))


@dataclass(slots=True)
class ArtifactRecord:
    """One captured value (a step's output). Small JSON values travel inline in ``value``;
    ``data`` holds bytes. A value that has no JSON form is kept as its ``repr`` and is not
    ``loadable``."""

    artifact_id: str
    name: str
    content_type: str
    size: int
    sha256: str
    value: Any = None
    data: bytes | None = None
    truncated: bool = False
    loadable: bool = True
    #: Stored apart (over the inline limit: a file or a blob): downloaded on its own, no
    #: ``value`` here.
    in_file: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The run document's form of the artifact (``data`` is downloaded on its own)."""
        doc: dict[str, Any] = {
            "artifact_id": self.artifact_id,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.data is None and not self.in_file:
            doc["value"] = self.value
        if self.truncated:
            doc["truncated"] = True
        doc["loadable"] = self.loadable
        return doc


@dataclass(slots=True)
class StepRun:
    """One step of a recorded run. ``outputs`` only when the step's values were captured;
    ``output_size`` (bytes of its JSON form) when its metadata was."""

    name: str
    status: StepStatus = StepStatus.PENDING
    started_at: float | None = None
    duration_ms: float | None = None
    #: {"type", "message", "traceback"}: the traceback is for ``zserve runs show`` only
    error: dict[str, str] | None = None
    outputs: dict[str, ArtifactRecord] | None = None
    output_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "started_at": iso(self.started_at),
            "duration_ms": self.duration_ms,
        }
        if self.error is not None:
            doc["error"] = {k: v for k, v in self.error.items() if k != "traceback"}
        if self.outputs is not None:
            doc["outputs"] = {name: a.to_dict() for name, a in self.outputs.items()}
        if self.output_size is not None:
            doc["output_size"] = self.output_size
        return doc


@dataclass(slots=True)
class RunRecord:
    """A recorded (tracked) run: what the store keeps and ``GET /runs/{id}`` answers. Fields a
    capture mode does not record are None, and absent from ``to_dict``."""

    run_id: str
    job_id: str
    pipeline: str
    capture: str
    deployment_id: str = ""
    status: JobStatus = JobStatus.RUNNING
    started_at: float | None = None
    finished_at: float | None = None
    parameters: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    #: {"type", "message", "step"?}
    error: dict[str, str] | None = None
    steps: list[StepRun] = field(default_factory=list)

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at) * 1000, 3)

    def to_dict(self) -> dict[str, Any]:
        """The run document (``GET /runs/{id}``): never a traceback."""
        doc: dict[str, Any] = {
            "run_id": self.run_id,
            "job_id": self.job_id,
            "deployment_id": self.deployment_id,
            "pipeline": self.pipeline,
            "capture": self.capture,
            "status": self.status,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_ms": self.duration_ms,
        }
        for name in ("parameters", "metadata", "error"):
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        doc["steps"] = [s.to_dict() for s in self.steps]
        return doc
