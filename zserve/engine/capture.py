"""Capture modes: which one applies, to a request, a step and a value.

Precedence for a request: its ``capture_override`` > the pipeline's ``settings["capture"]`` > the
server's default (``ZSERVE_CAPTURE_DEFAULT``) > ``none``. Then a server-wide ceiling
(``ZSERVE_CAPTURE_MAX``) caps it, in the order ``none < errors_only < sampled < metadata < full``,
and an off-switch (``ZSERVE_CREATE_RUNS=false``) forces ``none``. A ``sampled`` request is recorded
(fully) only when a hash of the sampling seed and its job id falls under the sample rate, so the
decision is reproducible.

Within a run, the most specific setting wins: a value's own policy > its step's
``settings["capture"]`` > the request's mode; a ``none`` on a step or a value is a privacy floor
that nothing above it can raise; the ceiling and the off-switch cap every level.

Servers record every mode (docs/architecture.md, "Tracked mode"); ``zserve run``, which has no
store writer, refuses the tracked ones with ``require_run_only`` rather than downgrade them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from zserve.errors import CaptureNotSupported, UsageError
from zserve.records import CAPTURE_MODES, CaptureMode

__all__ = [
    "RANK",
    "CaptureLimits",
    "RequestCapture",
    "cap",
    "require_run_only",
    "resolve_capture",
    "resolve_request",
    "resolve_value",
    "sampled_in",
]

#: How much each mode records, least to most.
RANK: dict[str, int] = {"none": 0, "errors_only": 1, "sampled": 2, "metadata": 3, "full": 4}


def resolve_capture(*choices: str | None) -> str:
    """The first mode set among ``choices``, given in precedence order; else ``none``."""
    for mode in choices:
        if mode:
            return mode
    return "none"


def require_run_only(mode: str | None, *, fix: str, what: str = "Capture mode") -> None:
    """Refuse a capture mode other than ``none``, saying how to proceed (``fix``): a mode is
    never downgraded silently."""
    if mode not in (None, "none"):
        raise CaptureNotSupported(f"{what} {mode!r} is not supported yet: {fix}")


def _mode(value: str, what: str) -> CaptureMode:
    for mode in CAPTURE_MODES:
        if value == mode:
            return mode
    raise UsageError(f"Unknown {what} {value!r}: use one of {', '.join(CAPTURE_MODES)}")


@dataclass(frozen=True)
class CaptureLimits:
    """What a server allows, whatever a request asks: the ceiling, the off-switch, and how
    ``sampled`` picks its requests."""

    ceiling: CaptureMode = "full"
    enabled: bool = True
    sample_rate: float = 0.1
    sample_seed: str = ""

    def __post_init__(self) -> None:
        _mode(self.ceiling, "capture ceiling")
        if not 0.0 <= self.sample_rate <= 1.0:
            raise UsageError(f"Invalid sample rate {self.sample_rate}: it must be from 0 to 1")


def cap(mode: str, limits: CaptureLimits) -> CaptureMode:
    """``mode`` under the ceiling and the off-switch."""
    applied = _mode(mode, "capture mode")
    if not limits.enabled:
        return "none"
    return applied if RANK[applied] <= RANK[limits.ceiling] else limits.ceiling


@dataclass(frozen=True)
class RequestCapture:
    """The capture of one request: the mode applied, the mode its precedence asked for (they
    differ when the ceiling or the off-switch cut it), and the sample rate for ``sampled``."""

    mode: CaptureMode
    requested: CaptureMode
    sample_rate: float
    #: Whether a record of this request may keep values (parameters, outputs): ``full``, and
    #: ``sampled`` and ``errors_only`` under a ``full`` ceiling; never ``metadata``.
    keeps_values: bool

    @property
    def capped(self) -> bool:
        return self.mode != self.requested


def resolve_request(
    limits: CaptureLimits,
    *,
    override: str | None = None,
    override_rate: float | None = None,
    pipeline: str | None = None,
    default: str | None = None,
) -> RequestCapture:
    """Apply the precedence (override > pipeline > default > none), then the limits."""
    requested = _mode(resolve_capture(override, pipeline, default), "capture mode")
    rate = limits.sample_rate if override_rate is None else override_rate
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"Invalid sample_rate {rate}: it must be from 0 to 1")
    mode = cap(requested, limits)
    values = mode == "full" or (mode in ("sampled", "errors_only") and limits.ceiling == "full")
    return RequestCapture(mode, requested, rate, values)


def sampled_in(job_id: str, rate: float, seed: str = "") -> bool:
    """Whether a ``sampled`` request with this job id is recorded: a hash of the seed and the
    job id, read as a fraction in [0, 1), falls under ``rate``. The same id, seed and rate
    always give the same answer, on every worker and host."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(f"{seed}\x00{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def resolve_value(
    request: str, *specific: str | None, limits: CaptureLimits | None = None
) -> CaptureMode:
    """The mode of a step or of one value: the most specific setting given (``specific`` in
    order from least to most specific: the step's, then the value's) over the request's mode;
    ``none`` at any of those levels is a floor that wins; the limits cap the result."""
    chosen = _mode(request, "capture mode")
    for setting in specific:
        if setting is None:
            continue
        mode = _mode(setting, "capture setting")
        if mode == "none":
            return "none"
        chosen = mode
    return chosen if limits is None else cap(chosen, limits)
