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

A step's own policy (``engine.policies``: its settings and ``Capture`` annotations) refines this
per step: its output is kept as an artifact when its resolved mode records values and its
``artifacts`` setting says so (``full``; ``sampled`` when the job is picked; ``errors_only`` only
if the run fails). A ``none`` step is recorded as a bare row (status and duration, no error
message, no output size); the plan's ``private_parameters`` and ``private_outputs`` are never kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import traceback
from collections.abc import Mapping
from typing import Any

from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

from zserve.engine.capture import CaptureLimits, RequestCapture, cap, sampled_in
from zserve.engine.context import RunContext
from zserve.engine.observer import Observer
from zserve.engine.policies import StepPolicy, redaction, step_value_mode
from zserve.engine.redact import Redactor, truncate
from zserve.records import ArtifactRecord, JobStatus, RunRecord, StepRun, StepStatus, new_id
from zserve.sdk.materializers import materializer_for

__all__ = ["DEFAULT_MAX_BYTES", "RunRecorder"]

#: Values bigger than this (bytes of their JSON form) are truncated (``ZSERVE_ARTIFACT_MAX_BYTES``).
DEFAULT_MAX_BYTES = 256 * 1024


def _ended(error: BaseException | None) -> str:
    """How a step or a run ended, from what ended it: completed, cancelled or failed."""
    if error is None:
        return "completed"
    return "cancelled" if isinstance(error, asyncio.CancelledError) else "failed"


# Looked up once: an enum member lookup or call costs ~45 ns or more (every step of a run).
_STEP_ENDED = {s.value: s for s in StepStatus}
_RUN_ENDED = {s.value: s for s in JobStatus}


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
        policies: Mapping[str, StepPolicy] | None = None,
        private_parameters: frozenset[str] = frozenset(),
        private_outputs: frozenset[str] = frozenset(),
        pipeline_redact: tuple[str, ...] | None = None,
        limits: CaptureLimits | None = None,
        redactor: Redactor | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        cache: dict[tuple[str, ...], object] | None = None,
    ) -> None:
        #: decisions that depend on the plan and the request's mode only, shared across runs
        self.cache = {} if cache is None else cache
        self.capture = capture
        self.limits = limits or CaptureLimits()
        self.policies = policies or {}
        self.private_parameters = private_parameters
        self.private_outputs = private_outputs
        self.pipeline_redact = pipeline_redact
        self.redactor = redactor or Redactor()
        if pipeline_redact:
            self.redactor = Redactor((*self.redactor.secret_words, *pipeline_redact))
        self.max_bytes = max_bytes
        self.job_id = job_id
        #: recording at all: a sampled request the sampler skipped records nothing
        self.active = capture.mode != "none" and (
            capture.mode != "sampled"
            or sampled_in(job_id, capture.sample_rate, self.limits.sample_seed)
        )
        self.keeps_values = capture.keeps_values
        self.building = RunRecord(
            run_id=new_id(), job_id=job_id, pipeline=pipeline, capture=capture.mode,
            deployment_id=deployment_id,
        )  # fmt: skip
        self.record: RunRecord | None = None
        self._steps: dict[str, StepRun] = {}
        #: outputs kept only if the run fails (``artifacts="errors_only"``), as ``_value`` gave
        self._if_failed: dict[str, tuple[Any, bool, str | None]] = {}

    def _request_mode(self) -> str:
        """The request's mode as far as values go: a picked sample, or an errors_only run, is
        recorded fully (if the ceiling allows values at all)."""
        request = self.capture.mode
        if request in ("sampled", "errors_only"):
            return "full" if self.keeps_values else "metadata"
        return request

    def _private(self, step: str) -> bool:
        """A ``none`` step: recorded as a bare row."""
        key = ("private", self._request_mode(), step)
        found = self.cache.get(key)
        if found is None:
            policy = self.policies.get(step)
            found = self.cache[key] = (
                step_value_mode(self._request_mode(), policy, output=False)[0] == "none"
            )
        return bool(found)

    def _rule(self, step: str) -> str:
        """The policy's word on a step's output under this request's mode (memoised in
        ``cache``, shared by the runs of one plan: it depends on nothing else)."""
        key = ("rule", self._request_mode(), step)
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = self._resolve_rule(step)
        return str(found)

    def _resolve_rule(self, step: str) -> str:
        if step in self.private_outputs:
            return "private"
        mode, artifacts = step_value_mode(self._request_mode(), self.policies.get(step))
        mode = cap(mode, self.limits)
        if mode == "none":
            return "private"
        if mode == "metadata" or (mode != "full" and self.limits.ceiling != "full"):
            return "none"
        return artifacts

    def _artifacts_of(self, step: str) -> str:
        """What becomes of this step's output: "full" (kept), "errors_only" (kept if the run
        fails), "none" (its size only) or "private" (nothing at all)."""
        artifacts = self._rule(step)
        if artifacts == "sampled":
            picked = sampled_in(self.job_id, self.capture.sample_rate, self.limits.sample_seed)
            artifacts = "full" if picked else "none"
        if artifacts == "full" and self.capture.mode == "errors_only":
            return "errors_only"  # kept only if the run fails: built only then
        return artifacts

    def _redactor(self, step: str) -> Redactor:
        own = redaction(None, self.policies.get(step))
        if not own:
            return self.redactor
        key = ("redactor", step)
        found = self.cache.get(key)
        if not isinstance(found, Redactor):
            found = self.cache[key] = Redactor((*self.redactor.secret_words, *own))
        return found

    def _step(self, step: str) -> StepRun:
        if step not in self._steps:
            self._steps[step] = StepRun(step)
        return self._steps[step]

    def run_started(self, ctx: RunContext) -> None:
        if not self.active:
            return
        self.building.started_at = time.time()
        ctx.run_id = self.building.run_id

    def step_started(self, step: str) -> None:
        if self.active:
            state = self._step(step)
            state.status, state.started_at = StepStatus.RUNNING, time.time()

    def step_output(self, step: str, value: Any) -> None:
        if not self.active:
            return
        kept = self._artifacts_of(step)
        if kept == "private":
            return
        state = self._step(step)
        if kept == "none":
            state.output_size = _size(value)
            return
        data, loadable, content_type = self._value(value)
        if kept == "errors_only":  # built only if the run fails; ``data`` is a copy already
            self._if_failed[step] = (data, loadable, content_type)
            return
        redactor = self._redactor(step)
        state.outputs = {"output": self._artifact("output", data, loadable, content_type, redactor)}

    def step_finished(self, step: str, seconds: float, error: BaseException | None) -> None:
        if not self.active:
            return
        state = self._step(step)
        state.duration_ms = round(seconds * 1000, 3)
        state.status = _STEP_ENDED[_ended(error)]
        if state.status is StepStatus.FAILED and error is not None and self._private(step):
            state.error = {"type": type(error).__name__, "message": "[not captured]"}
        elif state.status is StepStatus.FAILED and error is not None:
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
        run.status = _RUN_ENDED[_ended(error)]
        if run.status is JobStatus.FAILED and error is not None:
            run.error = {"type": type(error).__name__, "message": str(error)}
            if (step := getattr(error, "step", None)) is not None:
                run.error["step"] = str(step)
        if run.status is JobStatus.FAILED:
            for step, (data, loadable, content_type) in self._if_failed.items():
                artifact = self._artifact("output", data, loadable, content_type,
                                          self._redactor(step))  # fmt: skip
                self._steps[step].outputs = {"output": artifact}
        if self.capture.mode == "errors_only" and run.status is not JobStatus.FAILED:
            return  # a run that did not fail leaves no record
        if self._request_mode() == "full":
            params = ctx.parameters
            if self.private_parameters:
                params = {k: v for k, v in params.items() if k not in self.private_parameters}
            run.parameters = self.redactor.redact(self._jsonable(params)[0])
            if ctx.metadata:
                run.metadata = self.redactor.redact(self._jsonable(ctx.metadata)[0])
        self.record = run

    # -- values -------------------------------------------------------------------------------

    def _jsonable(self, value: Any) -> tuple[Any, bool]:
        """(JSON data or bytes, loadable): anything without a JSON form becomes its repr."""
        data, loadable, _ = self._value(value)
        return data, loadable

    def _value(self, value: Any) -> tuple[Any, bool, str | None]:
        """(JSON data or bytes, loadable, content type of bytes): a registered materializer
        first (``zserve.register_materializer``), then bytes, then JSON; anything else is kept
        as its type and repr, not loadable."""
        found = materializer_for(value)
        if found is not None:
            try:
                return bytes(found.save(value)), True, found.content_type
            except Exception as exc:  # a hook must not raise: keep what can be said
                failed = f"materializer for {found.type.__name__} failed: {exc!r}"
                return {"type": _type_name(value), "error": failed}, False, None
        if isinstance(value, bytes | bytearray):
            return bytes(value), True, None
        try:
            return to_jsonable_python(value, inf_nan_mode="null"), True, None
        except PydanticSerializationError:
            return {"type": _type_name(value), "repr": repr(value)}, False, None

    def _artifact(
        self, name: str, data: Any, loadable: bool, content_type: str | None, redactor: Redactor
    ) -> ArtifactRecord:
        """An artifact of ``data`` as ``_value`` gave it (JSON data or bytes)."""
        if isinstance(data, bytes):
            payload, truncated = data[: self.max_bytes], len(data) > self.max_bytes
            return ArtifactRecord(
                artifact_id=new_id(), name=name,
                content_type=content_type or "application/octet-stream", size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), data=payload, truncated=truncated,
                loadable=not truncated,
            )  # fmt: skip
        text = to_json(data)
        if redactor.may_hold_secrets(text):
            data = redactor.redact(data)
            text = to_json(data)
        kept, truncated = data, False
        if len(text) > self.max_bytes:
            kept, truncated = truncate(data, self.max_bytes)
            text = to_json(kept)
        return ArtifactRecord(
            artifact_id=new_id(), name=name,
            content_type="application/json" if loadable else "text/x-python-repr",
            size=len(text), sha256=hashlib.sha256(text).hexdigest(), value=kept,
            truncated=truncated, loadable=loadable and not truncated,
        )  # fmt: skip


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _size(value: Any) -> int:
    """Bytes of a value's stored form (its JSON text, or its bytes), for ``metadata``."""
    if isinstance(value, bytes | bytearray):
        return len(value)
    return len(to_json(value, fallback=repr, inf_nan_mode="null"))
