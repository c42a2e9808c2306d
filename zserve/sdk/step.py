"""``@step``: a function that becomes one node of a pipeline graph."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

from zserve.errors import PipelineDefinitionError
from zserve.sdk import tracing
from zserve.sdk.capture import check_step_settings

__all__ = ["DEFAULT_BATCH_WAIT_MS", "Step", "step"]

#: How long the first call of a batch waits for others, unless ``batch_wait_ms`` says.
DEFAULT_BATCH_WAIT_MS = 5.0

P = ParamSpec("P")
R = TypeVar("R")


class Step(Generic[P, R]):
    """A decorated step function.

    Called inside a pipeline body that is being traced, it records a node and returns a
    placeholder for its output. Called anywhere else, it is the plain function.
    """

    def __init__(
        self,
        fn: Callable[P, Any],
        *,
        name: str | None = None,
        blocking: bool | None = None,
        settings: dict[str, Any] | None = None,
        batch: int | None = None,
        batch_wait_ms: float | None = None,
    ):
        self.fn = fn
        self.name = name or fn.__name__
        self.signature = inspect.signature(fn)
        check_step_settings(self.name, self.signature, {} if settings is None else settings)
        #: a batched step (``batch=``): the most calls of concurrent runs gathered into one call
        #: of ``fn`` with a list per input, and how long the first of them may wait for others
        self.batch, self.batch_wait_ms = _check_batch(self.name, fn, batch, batch_wait_ms)
        #: capture settings (``zserve.sdk.capture``): capture, artifacts, inputs, outputs, redact
        self.settings: dict[str, Any] = dict(settings or {})
        #: an ``async def`` or ``async def ... yield`` step: runs on the event loop
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        #: a generator step: each item it yields is streamed as a ``step.chunk`` event
        self.is_generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        #: A sync step that may block runs in a worker thread; ``blocking=False`` declares a
        #: short, CPU-trivial sync step that runs on the event loop and skips the thread hop.
        self.blocking = blocking is not False and not self.is_async
        #: ``blocking`` not said, on a plain sync function: it runs in a thread until its
        #: durations show it is short (``zserve.engine.placement``)
        self.adaptive = (
            blocking is None and not self.is_async and not self.is_generator and batch is None
        )
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = tracing.current_tracer()
        if tracer is None:
            return self.fn(*args, **kwargs)  # type: ignore[no-any-return]
        # While tracing, a placeholder stands in for the value (typed as R for the user's sake).
        return tracer.record(self, args, kwargs)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"<Step {self.name}>"


def _check_batch(
    name: str, fn: Callable[..., Any], batch: int | None, wait_ms: float | None
) -> tuple[int | None, float]:
    """``batch`` and ``batch_wait_ms`` as given, checked; the wait defaults to 5 ms."""
    if batch is None:
        if wait_ms is not None:
            raise PipelineDefinitionError(
                f"step '{name}': batch_wait_ms applies to a batched step only; add batch=N "
                "(the most calls in one batch)"
            )
        return None, DEFAULT_BATCH_WAIT_MS
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise PipelineDefinitionError(
            f"step '{name}': batch must be a whole number of calls, 1 or more (got {batch!r})"
        )
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise PipelineDefinitionError(
            f"step '{name}': a generator step cannot be batched (each run streams its own "
            "items); remove batch=, or make it return a list"
        )
    if wait_ms is None:
        return batch, DEFAULT_BATCH_WAIT_MS
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int | float) or not wait_ms >= 0:
        raise PipelineDefinitionError(
            f"step '{name}': batch_wait_ms must be a number of milliseconds, 0 or more "
            f"(got {wait_ms!r})"
        )
    if wait_ms == float("inf"):
        raise PipelineDefinitionError(f"step '{name}': batch_wait_ms must be finite")
    return batch, float(wait_ms)


class _StepDecorator:
    """What ``@step(...)`` with options returns."""

    def __init__(
        self,
        name: str | None,
        blocking: bool | None,
        settings: dict[str, Any] | None,
        batch: int | None = None,
        batch_wait_ms: float | None = None,
    ) -> None:
        self.name = name
        self.blocking = blocking
        self.settings = settings
        self.batch = batch
        self.batch_wait_ms = batch_wait_ms

    @overload
    def __call__(self, fn: Callable[P, AsyncIterator[R]], /) -> Step[P, list[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, Iterator[R]], /) -> Step[P, list[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> Step[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Step[P, R]: ...
    def __call__(self, fn: Callable[P, Any], /) -> Step[P, Any]:
        return Step(fn, name=self.name, blocking=self.blocking, settings=self.settings,
                    batch=self.batch, batch_wait_ms=self.batch_wait_ms)  # fmt: skip


class _BatchedStepDecorator(_StepDecorator):
    """What ``@step(batch=N)`` returns. The function takes a list per input and returns a list;
    the pipeline body calls the step with single values and gets one element back, so to a
    type checker the step takes any arguments and returns the type of an element."""

    @overload  # type: ignore[override]
    def __call__(self, fn: Callable[..., Coroutine[Any, Any, Sequence[R]]], /) -> Step[..., R]: ...
    @overload
    def __call__(self, fn: Callable[..., Sequence[R]], /) -> Step[..., R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> Step[..., Any]:
        return super().__call__(fn)


@overload
def step(fn: Callable[P, AsyncIterator[R]], /) -> Step[P, list[R]]: ...
@overload
def step(fn: Callable[P, Iterator[R]], /) -> Step[P, list[R]]: ...
@overload
def step(fn: Callable[P, Coroutine[Any, Any, R]], /) -> Step[P, R]: ...
@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...
@overload
def step(
    *,
    name: str | None = None,
    blocking: bool | None = None,
    settings: dict[str, Any] | None = None,
    batch: int,
    batch_wait_ms: float | None = None,
) -> _BatchedStepDecorator: ...
@overload
def step(
    *,
    name: str | None = None,
    blocking: bool | None = None,
    settings: dict[str, Any] | None = None,
    batch: None = None,
    batch_wait_ms: float | None = None,
) -> _StepDecorator: ...


def step(
    fn: Callable[P, Any] | None = None,
    /,
    *,
    name: str | None = None,
    blocking: bool | None = None,
    settings: dict[str, Any] | None = None,
    batch: int | None = None,
    batch_wait_ms: float | None = None,
) -> Step[P, Any] | _StepDecorator | _BatchedStepDecorator:
    """Mark a function as a pipeline step: ``@step`` or ``@step(name=..., blocking=False,
    settings={...})``.

    ``def`` and ``async def`` functions are supported, and generators of either kind: each
    yielded item is streamed as a ``step.chunk`` event, and the step's output is the list of
    items (or, for a sync generator, the value it ``return``s, when not None).

    A sync step runs in a worker thread with the request's context copied, unless
    ``blocking=False`` says it is short enough to run on the event loop (no I/O, microseconds of
    work). A plain ``@step`` in a linear pipeline moves to the event loop once its runs have
    shown it is short, and back to threads for good after one long run there
    (``zserve.engine.placement``); ``blocking=True`` keeps it in threads always. Inside a
    pipeline body a step call stands for the step's (awaited) return value; elsewhere it calls
    the function (``.fn`` is the function).

    ``settings`` sets the step's capture policy (checked here; ``zserve.sdk.capture``):
    ``capture`` (its mode: ``"none"`` for a step that handles personal data, ``"full"`` to debug
    it), ``artifacts``, ``inputs`` (``{param: mode | {"mode": ..., "artifacts": ...}}``),
    ``outputs`` (the same, for its output as a whole) and ``redact`` (key words). A value's
    policy can also be written in the signature: ``token: Annotated[str, Capture("none")]``.

    ``batch=N`` makes a batched step: the engine gathers the calls of concurrent runs in a
    worker into one call of the function, up to ``N`` of them, the first waiting at most
    ``batch_wait_ms`` (default 5) for others, and none when no other run can still reach the
    step. The function receives a list for each of its inputs and returns a list (or tuple) of
    the same length, one result per call, in order; an element that is an exception fails only
    that call's run. The pipeline body calls the step with single values, like any other step.
    A sync batched function runs in a worker thread (on the loop with ``blocking=False``), one
    batch at a time; generator steps cannot be batched. Inside it ``get_context()`` is not
    available (its call serves several runs).
    """
    kind = _StepDecorator if batch is None else _BatchedStepDecorator
    decorator = kind(name, blocking, settings, batch, batch_wait_ms)
    return decorator if fn is None else decorator(fn)
