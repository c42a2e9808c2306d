"""The per-request run context, bound in a ContextVar so concurrent requests never mix."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunContext", "get_context"]


@dataclass
class RunContext:
    """What a step can learn about the run it is part of (``zserve.get_context()``)."""

    job_id: str
    pipeline: str
    capture: str = "none"
    run_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def log_metadata(self, values: dict[str, Any]) -> None:
        """Attach metadata to the run. Kept in memory; stored when the run is tracked."""
        self.metadata.update(values)


_current: ContextVar[RunContext | None] = ContextVar("zserve_run_context", default=None)


def get_context() -> RunContext:
    """The context of the run being executed. Only valid inside a step."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("zserve.get_context() is only available while a pipeline step runs")
    return ctx
