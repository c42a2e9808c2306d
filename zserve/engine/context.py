"""The per-request run context, bound in a ContextVar so concurrent requests never mix."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunContext", "bind_context", "current_step", "get_context", "unbind_context"]

#: The step being run (set around each step call, in its own task or thread context).
current_step: ContextVar[str | None] = ContextVar("zserve_step", default=None)


@dataclass(slots=True)
class RunContext:
    """What a step can learn about the run it is part of (``zserve.get_context()``)."""

    job_id: str
    pipeline: str
    capture: str = "none"
    run_id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Told (step, data) by ``emit``; None when nobody listens.
    on_progress: Callable[[str, Any], None] | None = field(default=None, repr=False)

    @property
    def step(self) -> str | None:
        """The name of the step calling this."""
        return current_step.get()

    def emit(self, data: Any) -> None:
        """Report progress from inside a step: a ``step.progress`` event for whoever follows
        the job (SSE, WebSocket, ``zserve stream``). Costs nothing when nobody listens."""
        if self.on_progress is not None:
            self.on_progress(current_step.get() or "", data)

    def log_metadata(self, values: dict[str, Any]) -> None:
        """Attach metadata to the run. Kept in memory; stored when the run is tracked."""
        self.metadata.update(values)


_current: ContextVar[RunContext | None] = ContextVar("zserve_run_context", default=None)


def bind_context(ctx: RunContext) -> Token[RunContext | None]:
    """Make ``ctx`` what ``get_context()`` answers in this task (and the threads it starts)
    until ``unbind_context`` is called with the returned token."""
    return _current.set(ctx)


def unbind_context(token: Token[RunContext | None]) -> None:
    _current.reset(token)


def get_context() -> RunContext:
    """The context of the run being executed. Only valid inside a step."""
    ctx = _current.get()
    if ctx is None:
        if current_step.get() is not None:  # only a batched step runs without a run context
            raise RuntimeError(
                "zserve.get_context() is not available in a batched step: its call serves "
                "several runs at once"
            )
        raise RuntimeError("zserve.get_context() is only available while a pipeline step runs")
    return ctx
