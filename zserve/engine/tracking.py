"""``Tracking``: a server's capture settings, built once, turned into each request's capture and
its ``RunRecorder``.

A request without ``capture_override`` gets the capture computed at start (the pipeline's mode
over the server's default, under the limits), so a run-only request pays one attribute read and
no recorder. See ``engine.capture`` for the precedence and ``engine.recorder`` for what is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zserve.engine.capture import CaptureLimits, RequestCapture, resolve_request
from zserve.engine.plan import CaptureOverride, Plan
from zserve.engine.recorder import DEFAULT_MAX_BYTES, RunRecorder
from zserve.engine.redact import Redactor
from zserve.settings import Settings

__all__ = ["Tracking"]


@dataclass
class Tracking:
    plan: Plan
    limits: CaptureLimits = field(default_factory=CaptureLimits)
    #: The server's default mode (``ZSERVE_CAPTURE_DEFAULT``, or the deployment's).
    default: str | None = None
    deployment_id: str = ""
    #: The pipeline level of the precedence: the deployment's mode (``deploy --capture``, which
    #: defaults to the pipeline's ``settings["capture"]``); None = the pipeline's own.
    pipeline_mode: str | None = None
    redactor: Redactor = field(default_factory=Redactor)
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        #: what recorders of this plan decide once per mode and step (``RunRecorder.cache``)
        self.cache: dict[tuple[str, ...], object] = {}
        if self.pipeline_mode is None:
            self.pipeline_mode = self.plan.pipeline.capture
        #: The capture of a request that does not override it.
        self.usual: RequestCapture = resolve_request(
            self.limits, pipeline=self.pipeline_mode, default=self.default
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, plan: Plan, deployment_id: str = "", deployed: str | None = None
    ) -> Tracking:
        """``deployed``: the deployment's own mode (its ``capture_default``), if not none."""
        limits = CaptureLimits(
            ceiling=settings.capture_max,  # type: ignore[arg-type]  # validated by Settings
            enabled=settings.create_runs,
            sample_rate=settings.sample_rate,
            sample_seed=settings.sample_seed,
        )
        return cls(
            plan, limits, settings.capture_default, deployment_id,
            deployed if deployed not in (None, "none") else None,
            Redactor.from_setting(settings.redact), settings.artifact_max_bytes,
        )  # fmt: skip

    def request(self, override: CaptureOverride | None) -> RequestCapture:
        """The capture of one request: its override > the pipeline's > the default."""
        if override is None:
            return self.usual
        return resolve_request(
            self.limits, override=override.mode, override_rate=override.sample_rate,
            pipeline=self.pipeline_mode, default=self.default,
        )  # fmt: skip

    def recorder(self, capture: RequestCapture, job_id: str) -> RunRecorder | None:
        """The recorder of one run, or None when the request records nothing."""
        if capture.mode == "none":
            return None
        recorder = RunRecorder(
            capture, job_id=job_id, pipeline=self.plan.name, deployment_id=self.deployment_id,
            policies=self.plan.policies, private_parameters=self.plan.private_parameters,
            private_outputs=self.plan.private_outputs, pipeline_redact=self.plan.redact,
            limits=self.limits, redactor=self.redactor, max_bytes=self.max_bytes,
            cache=self.cache,
        )  # fmt: skip
        return recorder if recorder.active else None
