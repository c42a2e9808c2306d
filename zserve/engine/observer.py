"""Who listens to a run: the hooks the runner calls, and how several listeners share one run.

The jobs layer listens to record each step's state and publish events; tracked mode will listen
to record runs, steps and their outputs. ``observe()`` folds any number of listeners into one
``Observer``: none gives ``SILENT`` (its hooks do nothing, so run-only pays a few no-op calls),
one is used as it is, several are called in order. Hooks may be called from worker threads (sync
steps run there) and must not raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zserve.engine.context import RunContext

__all__ = ["SILENT", "Observer", "Observers", "observe"]


class Observer:
    """Hooks the runner calls for one run; this base does nothing."""

    def run_started(self, ctx: RunContext) -> None:
        """The run begins (on the event loop): its job id, parameters and capture mode."""

    def run_finished(
        self, ctx: RunContext, outputs: dict[str, Any] | None, error: BaseException | None
    ) -> None:
        """The run ended (on the event loop): with its outputs, or with the exception that
        ended it (a ``ZServeError``, or ``CancelledError`` when it was cancelled)."""

    def step_started(self, step: str) -> None:
        pass

    def step_output(self, step: str, value: Any) -> None:
        """A step returned ``value`` (a generator step: its items, or what it returned);
        called just before ``step_finished``."""

    def step_finished(self, step: str, seconds: float, error: BaseException | None) -> None:
        """A step ended: ``error`` is None when it returned, the exception it raised, or
        ``CancelledError`` when the run was cancelled (or timed out) while it ran. Every
        ``step_started`` is followed by one ``step_finished``."""

    def chunk(self, step: str, item: Any) -> None:
        """A generator step yielded ``item``."""

    def progress(self, step: str, data: Any) -> None:
        """A step called ``get_context().emit(data)``."""


#: The observer of a run nobody listens to.
SILENT = Observer()


class Observers(Observer):
    """Several observers of one run, each told of everything, in the order given."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def run_started(self, ctx: RunContext) -> None:
        for o in self.observers:
            o.run_started(ctx)

    def run_finished(
        self, ctx: RunContext, outputs: dict[str, Any] | None, error: BaseException | None
    ) -> None:
        for o in self.observers:
            o.run_finished(ctx, outputs, error)

    def step_started(self, step: str) -> None:
        for o in self.observers:
            o.step_started(step)

    def step_output(self, step: str, value: Any) -> None:
        for o in self.observers:
            o.step_output(step, value)

    def step_finished(self, step: str, seconds: float, error: BaseException | None) -> None:
        for o in self.observers:
            o.step_finished(step, seconds, error)

    def chunk(self, step: str, item: Any) -> None:
        for o in self.observers:
            o.chunk(step, item)

    def progress(self, step: str, data: Any) -> None:
        for o in self.observers:
            o.progress(step, data)


def observe(*observers: Observer | None) -> Observer:
    """One observer for a run: ``SILENT`` for none, the one itself, or ``Observers``."""
    if len(observers) == 1 and observers[0] is not None:
        return observers[0]  # the common case (a job's tracker), kept cheap
    listening = [o for o in observers if o is not None and o is not SILENT]
    if not listening:
        return SILENT
    if len(listening) == 1:
        return listening[0]
    return Observers(*listening)
