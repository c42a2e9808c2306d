"""Capture modes: which one applies to a request, and the one check of what this version serves.

Precedence: the request's ``capture_override`` > the pipeline's ``settings["capture"]`` > the
server's default (``ZSERVE_CAPTURE_DEFAULT``) > ``none``. Only ``none`` (run-only) is served so
far; tracked mode (the other modes) replaces ``require_run_only`` with its recorder.
"""

from __future__ import annotations

from zserve.errors import CaptureNotSupported

__all__ = ["require_run_only", "resolve_capture"]


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
