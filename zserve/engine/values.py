"""Values leaving a run as JSON: step outputs, chunks, progress, constants of a plan, and the
answer to a run that succeeded."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python

__all__ = ["jsonable", "success_body"]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: pydantic models, dataclasses, datetimes and the like by
    pydantic-core's rules, NaN and infinities as null, anything else as its ``repr``."""
    return to_jsonable_python(value, fallback=repr, inf_nan_mode="null")


def success_body(
    outputs: dict[str, Any],
    job_id: str,
    capture: str,
    elapsed_s: float,
    run_id: str | None = None,
    capture_requested: str | None = None,
) -> dict[str, Any]:
    """The answer to a sync invoke that succeeded (also ``zserve run --json``).
    ``capture_requested`` is there only when the server lowered the mode asked for."""
    body = {
        "success": True,
        "outputs": outputs,
        "job_id": job_id,
        "run_id": run_id,
        "capture": capture,
        "execution_time_ms": round(elapsed_s * 1000, 3),
    }
    if capture_requested is not None:
        body["capture_requested"] = capture_requested
    return body
