"""``RunRecorder``: the observer that turns one tracked run into a ``RunRecord``.

It hears the run through the observer hooks, like the jobs layer's ``StepTracker``, and builds
the record in memory; writing it to the store is for whoever holds the recorder after the run.
What it keeps follows the request's capture (``engine.capture.resolve_request``) and each step's
own mode (``resolve_value``):

- ``metadata``: the run and its steps (status, start, duration, error type and message, output
  sizes); no values.
- ``full``: also the parameters, each step's output as an artifact, and the run's metadata
  (``get_context().log_metadata``).
- ``sampled``: ``full`` for the requests ``sampled_in`` picks, nothing for the others.
- ``errors_only``: values are kept in memory while the run goes; the record is kept only when
  the run fails, with the failing step's traceback.

Under a ceiling below ``full``, ``sampled`` and ``errors_only`` records keep no values. Secret
keys are redacted and values over the size cap truncated before anything is kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import traceback
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from zserve.engine.capture import CaptureLimits, RequestCapture, resolve_value, sampled_in
from zserve.engine.context import RunContext
from zserve.engine.observer import Observer
from zserve.engine.redact import Redactor, truncate
from zserve.records import ArtifactRecord, JobStatus, RunRecord, StepRun, StepStatus

__all__ = ["DEFAULT_MAX_BYTES", "RunRecorder"]

#: Values bigger than this (bytes of their JSON form) are truncated (``ZSERVE_ARTIFACT_MAX_BYTES``).
DEFAULT_MAX_BYTES = 256 * 1024


def _ended(error: BaseException | None) -> str:
    """How a step or a run ended, from what ended it: completed, cancelled or failed."""
    if error is None:
        return "completed"
    return "cancelled" if isinstance(error, asyncio.CancelledError) else "failed"


class RunRecorder(Observer):
    """Builds the ``RunRecord`` of one run; ``record`` is set once the run has finished and it
    is to be kept (None otherwise: not sampled, an ``errors_only`` run that succeeded...)."""

    def __init__(
        self,
        capture: RequestCapture,
        *,
        job_id: str,
        pipeline: str,
        deployment_id: str = "",
        step_modes: Mapping[str, str | None] | None = None,
        limits: CaptureLimits | None = None,
        redactor: Redactor | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.capture = capture
        self.limits = limits or CaptureLimits()
        self.step_modes = dict(step_modes or {})
        self.redactor = redactor or Redactor()
        self.max_bytes = max_bytes
        #: recording at all: a sampled request the sampler skipped records nothing
        self.active = capture.mode != "none" and (
            capture.mode != "sampled"
            or sampled_in(job_id, capture.sample_rate, self.limits.sample_seed)
        )
        self.keeps_values = capture.keeps_values
        self.building = RunRecord(
            run_id=str(uuid.uuid4()), job_id=job_id, pipeline=pipeline, capture=capture.mode,
            deployment_id=deployment_id,
        )  # fmt: skip
        self.record: RunRecord | None = None
        self._steps: dict[str, StepRun] = {}

    def _values_of(self, step: str) -> bool:
        """Whether this step's values are kept (before the errors_only decision): the step's
        own mode wins over the request's (``full`` on one step debugs it under ``metadata``),
        within the limits."""
        request = self.capture.mode
        if request in ("sampled", "errors_only"):
            if not self.keeps_values:
                return False
            request = "full"  # a picked sample, or a failure, is recorded fully
        return resolve_value(request, self.step_modes.get(step), limits=self.limits) == "full"

    def _step(self, step: str) -> StepRun:
        if step not in self._steps:
            self._steps[step] = StepRun(step)
        return self._steps[step]

    def run_started(self, ctx: RunContext) -> None:
        if not self.active:
            return
        self.building.started_at = time.time()
        if self.keeps_values:
            self.building.parameters = self.redactor.redact(self._jsonable(ctx.parameters)[0])

    def step_started(self, step: str) -> None:
        if self.active:
            state = self._step(step)
            state.status, state.started_at = StepStatus.RUNNING, time.time()

    def step_output(self, step: str, value: Any) -> None:
        if not self.active or self.step_modes.get(step) == "none":
            return
        state = self._step(step)
        data, loadable = self._jsonable(value)
        if self._values_of(step):
            state.outputs = {"output": self._artifact("output", data, loadable)}
        elif not isinstance(data, bytes):
            state.output_size = len(json.dumps(data, default=repr).encode())
        else:
            state.output_size = len(data)

    def step_finished(self, step: str, seconds: float, error: BaseException | None) -> None:
        if not self.active:
            return
        state = self._step(step)
        state.duration_ms = round(seconds * 1000, 3)
        state.status = StepStatus(_ended(error))
        if state.status is StepStatus.FAILED and error is not None:
            state.error = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": "".join(traceback.format_exception(error)),
            }

    def run_finished(
        self, ctx: RunContext, outputs: dict[str, Any] | None, error: BaseException | None
    ) -> None:
        if not self.active:
            return
        run = self.building
        run.finished_at = time.time()
        run.steps = list(self._steps.values())
        run.status = JobStatus(_ended(error))
        if run.status is JobStatus.FAILED and error is not None:
            run.error = {"type": type(error).__name__, "message": str(error)}
            if (step := getattr(error, "step", None)) is not None:
                run.error["step"] = str(step)
        if self.keeps_values and ctx.metadata:
            run.metadata = self.redactor.redact(self._jsonable(ctx.metadata)[0])
        if self.capture.mode == "errors_only" and run.status is not JobStatus.FAILED:
            return  # a run that did not fail leaves no record
        self.record = run

    # -- values -------------------------------------------------------------------------------

    def _jsonable(self, value: Any) -> tuple[Any, bool]:
        """(JSON data or bytes, loadable): anything without a JSON form becomes its repr."""
        if isinstance(value, bytes | bytearray):
            return bytes(value), True
        try:
            return to_jsonable_python(value, inf_nan_mode="null"), True
        except PydanticSerializationError:
            return repr(value), False

    def _artifact(self, name: str, data: Any, loadable: bool) -> ArtifactRecord:
        """An artifact of ``data`` as ``_jsonable`` gave it (JSON data or bytes)."""
        if isinstance(data, bytes):
            payload, truncated = data[: self.max_bytes], len(data) > self.max_bytes
            return ArtifactRecord(
                artifact_id=str(uuid.uuid4()), name=name,
                content_type="application/octet-stream", size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), data=payload, truncated=truncated,
            )  # fmt: skip
        kept, truncated = truncate(self.redactor.redact(data), self.max_bytes)
        text = json.dumps(kept, default=repr, ensure_ascii=False).encode()
        return ArtifactRecord(
            artifact_id=str(uuid.uuid4()), name=name,
            content_type="application/json" if loadable else "text/x-python-repr",
            size=len(text), sha256=hashlib.sha256(text).hexdigest(), value=kept,
            truncated=truncated, loadable=loadable and not truncated,
        )  # fmt: skip
