"""Dynamic batching: the calls of concurrent runs to one batched step (``@step(batch=N)``),
gathered into one call of its function with a list per input.

One ``Batcher`` per batched node of a plan, made when the plan is compiled and bound to the
event loop that first uses it (again to another loop once idle: tests and ``zserve run`` use
several). Runs put their call in its queue and wait for their own result. A batch starts when
``max_size`` calls wait, when the first of them has waited ``max_wait_ms`` (a ``call_later``
timer: no polling), or at once when no other run can still reach the step: ``expected`` counts
the runs of the plan under way that have not reached it yet (the runner counts them), so a lone
request pays no wait. One batch runs at a time; calls that come meanwhile pile up and form the
next batch as soon as it ends, so the size of a batch follows the load.

A sync function runs in the loop's default executor (the step threads), or on the loop with
``blocking=False``; an async one as a task. Either way in a context of its own, with
``current_step`` set and no run context (its call serves several runs). When it returns, each
waiting run gets its own element on the loop (an element that is an exception fails that run
only); when it raises, or returns a list of the wrong length, every run of the batch fails. A
run cancelled (or timed out) while queued leaves the queue; one cancelled while its batch runs
has its result dropped; neither disturbs the others.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import Any

from zserve.engine.context import current_step

__all__ = ["BatchHook", "BatchSpec", "Batcher", "Outcome", "describe_batching"]

logger = logging.getLogger("zserve.engine")

#: Told (step, size, seconds the oldest call waited) for every batch (``/metrics``).
BatchHook = Callable[[str, int, float], None]
#: What a run gets back: (its value, None) or (None, why its call failed).
Outcome = tuple[Any, BaseException | None]


@dataclass(frozen=True)
class BatchSpec:
    max_size: int
    max_wait_ms: float


class _Item:
    """One run's call, waiting in the queue or in a running batch."""

    __slots__ = ("enqueued", "future", "kwargs")

    def __init__(self, kwargs: dict[str, Any], future: asyncio.Future[Outcome], now: float):
        self.kwargs = kwargs
        self.future = future
        self.enqueued = now


class Batcher:
    """The queue of one batched node, and its one batch in flight."""

    def __init__(
        self,
        step: str,
        fn: Callable[..., Any],
        spec: BatchSpec,
        *,
        is_async: bool,
        on_loop: bool = False,
        arity: int | None = None,
        shared: frozenset[str] = frozenset(),
    ) -> None:
        self.step = step
        self.fn = fn
        self.spec = spec
        self.is_async = is_async
        #: a sync function declared ``blocking=False``: called on the loop
        self.on_loop = on_loop and not is_async
        #: each element must be a tuple of this many values (the body takes it apart)
        self.arity = arity
        #: arguments passed once, not as a list (its resources: the same for every call)
        self.shared = shared
        self.on_batch: BatchHook | None = None
        #: runs under way that have not reached this step yet; a batch starts at once at 0
        #: (a count left high, by a loop closed with runs under way, only makes a lone call
        #: wait for the timer)
        self.expected = 0
        self._max_wait = spec.max_wait_ms / 1000
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Item] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._context = contextvars.Context()
        self._context.run(current_step.set, step)

    @property
    def queued(self) -> int:
        """Calls waiting for a batch (not those of the batch in flight)."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """Whether a batch is in flight."""
        return self._running

    def expect(self) -> None:
        """A run that will reach this step has started."""
        self.expected += 1

    def forget(self) -> None:
        """A run that was expected ended without reaching this step (it failed before)."""
        self.expected -= 1
        idle = self._queue and not self._running
        if self.expected <= 0 and idle and self._loop is asyncio.get_running_loop():
            self._flush()

    async def call(self, kwargs: dict[str, Any]) -> Outcome:
        """This run's call (it has reached the step): its own result, or why it failed."""
        self.expected -= 1
        loop = asyncio.get_running_loop()
        if loop is not self._loop and not self._rebind(loop):
            return await self._alone(loop, kwargs)  # busy on another loop: this call alone
        queue = self._queue
        item = _Item(kwargs, loop.create_future(), loop.time())
        queue.append(item)
        if len(queue) >= self.spec.max_size or self.expected <= 0:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._max_wait, self._flush)
        try:
            return await item.future
        except asyncio.CancelledError:
            self._withdraw(item)
            raise

    def _rebind(self, loop: asyncio.AbstractEventLoop) -> bool:
        busy = self._queue or self._running
        if busy and self._loop is not None and not self._loop.is_closed():
            return False
        self._loop, self._timer, self._running = loop, None, False
        self._queue.clear()  # only calls of a closed loop, nobody waits for them
        return True

    def _withdraw(self, item: _Item) -> None:
        try:
            self._queue.remove(item)
        except ValueError:
            return  # in the running batch: its result will be dropped
        if not self._queue and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running:
            return  # the batch in flight starts the next when it ends
        queue, items = self._queue, list[_Item]()
        while queue and len(items) < self.spec.max_size:
            item = queue.popleft()
            if not item.future.done():  # not cancelled
                items.append(item)
        if not items:
            return
        loop = self._loop
        assert loop is not None
        self._running = True
        self._tell(len(items), loop.time() - items[0].enqueued)
        running: asyncio.Future[Any]
        try:
            lists = self._lists([item.kwargs for item in items])
            context = self._context.copy()
            if self.is_async:
                running = loop.create_task(self.fn(**lists), context=context)
            elif self.on_loop:
                result = context.run(self.fn, **lists)
            else:
                call = functools.partial(context.run, self.fn, **lists)
                running = loop.run_in_executor(None, call)
        except BaseException as exc:  # whatever it is, the calls of this batch get an answer
            self._deliver(items, None, exc)
            if isinstance(exc, KeyboardInterrupt):
                raise
            return
        if self.on_loop and not self.is_async:
            self._deliver(items, result, None)
            return
        running.add_done_callback(functools.partial(self._finished, items))

    def _tell(self, size: int, waited: float) -> None:
        """The batch hook (metrics): one that raises is logged, never a reason to lose calls."""
        if self.on_batch is not None:
            try:
                self.on_batch(self.step, size, waited)
            except Exception:
                logger.exception("The batch hook of step '%s' raised", self.step)

    def _lists(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """The function's arguments for these calls: a list per input, a resource once."""
        shared = self.shared
        return {name: value if name in shared else [call[name] for call in calls]
                for name, value in calls[0].items()}  # fmt: skip

    def _finished(self, items: list[_Item], running: asyncio.Future[Any]) -> None:
        if running.cancelled():  # something the function awaited was cancelled, or the loop ends
            error: BaseException | None = RuntimeError(
                f"batched step '{self.step}' was cancelled while it ran"
            )
            self._deliver(items, None, error)  # and the calls queued behind it go on
            return
        error = running.exception()
        self._deliver(items, None if error is not None else running.result(), error)

    def _deliver(self, items: list[_Item], result: Any, error: BaseException | None) -> None:
        self._running = False
        for item, outcome in zip(items, self._outcomes(result, error, len(items)), strict=True):
            if not item.future.done():  # a cancelled run's result is dropped
                item.future.set_result(outcome)
        if self._queue:
            self._flush()

    def _outcomes(self, result: Any, error: BaseException | None, n: int) -> list[Outcome]:
        """One outcome per call of a batch of ``n``."""
        if error is None and not isinstance(result, list | tuple) and _sequence_like(result):
            result = list(result)  # a NumPy array, a pandas Series...
        if error is None and (not isinstance(result, list | tuple) or len(result) != n):
            sized = isinstance(result, list | tuple)
            got = f"{len(result)} results" if sized else f"a {type(result).__name__}"
            error = ValueError(
                f"batched step '{self.step}' returned {got} for a batch of {n} calls; return "
                f"a list of {n} results, one per call, in the order of its inputs"
            )
        if error is not None:
            return [(None, error)] * n
        return [self._own(value) for value in result]

    def _own(self, value: Any) -> Outcome:
        if isinstance(value, BaseException):
            return None, value
        arity = self.arity
        if arity is not None and not (isinstance(value, tuple | list) and len(value) == arity):
            sized = isinstance(value, tuple | list)
            got = f"{len(value)} values" if sized else type(value).__name__
            return None, ValueError(
                f"returned {got} for one call, expected {arity} (its return annotation is a "
                f"list of {arity}-tuples, which the pipeline takes apart); return exactly "
                f"{arity} values for each call, or change the annotation"
            )
        return value, None

    async def _alone(self, loop: asyncio.AbstractEventLoop, kwargs: dict[str, Any]) -> Outcome:
        """One call as a batch of one, outside the queue (which serves another loop)."""
        lists = self._lists([kwargs])
        context = self._context.copy()
        self._tell(1, 0.0)
        try:
            if self.is_async:
                result = await loop.create_task(self.fn(**lists), context=context)
            elif self.on_loop:
                result = context.run(self.fn, **lists)
            else:
                call = functools.partial(context.run, self.fn, **lists)
                result = await loop.run_in_executor(None, call)
        except (Exception, SystemExit) as exc:
            return None, exc
        return self._outcomes(result, None, 1)[0]


def _sequence_like(value: Any) -> bool:
    return (
        isinstance(value, Sized)
        and isinstance(value, Iterable)
        and not isinstance(value, str | bytes | Mapping)
    )


def describe_batching(batchers: tuple[Batcher, ...]) -> dict[str, dict[str, Any]]:
    """Each batched step's settings (``/status``, ``/info``): ``{step: {max_size,
    max_wait_ms}}``."""
    return {b.step: {"max_size": b.spec.max_size, "max_wait_ms": b.spec.max_wait_ms}
            for b in batchers}  # fmt: skip
