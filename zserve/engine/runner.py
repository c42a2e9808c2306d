"""Run a compiled plan for one request: run-only, values in memory, nothing written.

Linear plans run as straight-line code, with one thread hop per run of consecutive blocking sync
steps. Other plans start every step as soon as its inputs are ready, so parallel branches take
the time of the slowest branch; the first failing step cancels its siblings.

Observers (``zserve.engine.observer``) hear about the run and every step (started, output,
finished, chunks, progress); they are how jobs record their steps' states and publish events, and
how tracked mode will record runs. Cancelling the task that runs ``execute`` stops
the run: async steps at once, a sync step when it returns (its result is discarded), a generator
step between two items; no further step starts.

A batched step (``@step(batch=N)``) hands its call to the step's ``Batcher``
(``zserve.engine.batching``) and waits for its own result; the observers hear about it on the
loop, with this run's own value. Runs of a plan with batched steps are counted by each batcher
until they reach its step, so that a batch starts at once when no other run can join it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Generator, Sequence
from typing import Any

from zserve.engine.batching import Batcher
from zserve.engine.context import RunContext, bind_context, current_step, unbind_context
from zserve.engine.observer import SILENT, Observer, observe
from zserve.engine.placement import Placement
from zserve.engine.plan import CompiledStep, Plan
from zserve.errors import ExecutionTimeout, StepFailed

__all__ = ["execute"]


class _Stopped(Exception):
    """A generator step in a thread saw the run's stop flag between two items."""


class _Run:
    """What one execution carries: values, the observer, and the stop flag for threads."""

    __slots__ = ("_stop", "deadline", "observer", "params", "results", "unreached")

    def __init__(self, params: dict[str, Any], observer: Observer) -> None:
        self.params = params
        self.results: dict[str, Any] = {}
        self.observer = observer
        self._stop: threading.Event | None = None
        #: The loop time by which the run must end (``timeout_s``), or None.
        self.deadline: float | None = None
        #: The batched steps this run has yet to reach (set only when the plan has some).
        self.unreached: set[Batcher]

    def check_deadline(self) -> None:
        """A step on the event loop cannot be interrupted: the time is checked between them
        (and at the end), so a run past its ``timeout_s`` still times out."""
        if self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline:
            raise TimeoutError

    @property
    def stop(self) -> threading.Event:
        """Set when the run ends early; threads check it between steps and items. Made on
        first use: a run with no thread stage and no generator never needs one."""
        if self._stop is None:
            self._stop = threading.Event()
        return self._stop

    def halt(self) -> None:
        if self._stop is not None:
            self._stop.set()


async def execute(
    plan: Plan,
    params: dict[str, Any],
    *,
    job_id: str,
    capture: str = "none",
    timeout_s: float | None = None,
    observers: Sequence[Observer] = (),
) -> dict[str, Any]:
    """Run ``plan`` with validated ``params``; return its named outputs.

    Raises StepFailed (the step's exception is its ``__cause__``), ExecutionTimeout, or
    CancelledError when the calling task is cancelled. Every observer hears the whole run.
    """
    observer = observe(*observers)
    run = _Run(params, observer)
    ctx = RunContext(job_id=job_id, pipeline=plan.name, capture=capture, parameters=params,
                     on_progress=None if observer is SILENT else observer.progress)  # fmt: skip
    token = bind_context(ctx)
    observer.run_started(ctx)
    if plan.batchers:  # counted once nothing can fail before the ``try`` that forgets them
        run.unreached = set(plan.batchers)
        for batcher in plan.batchers:
            batcher.expect()
    try:
        if timeout_s is None:
            await _run(plan, run)
        else:
            try:
                async with asyncio.timeout(timeout_s) as limit:
                    run.deadline = limit.when()
                    await _run(plan, run)
                    run.check_deadline()
            except TimeoutError:
                raise ExecutionTimeout(
                    f"Pipeline '{plan.name}' did not finish within {timeout_s:g} s"
                ) from None
        outputs = _outputs(plan, params, run.results)
    except BaseException as exc:
        run.halt()  # a step still running in a thread starts nothing more
        if plan.batchers:  # (a run that succeeds reached every step)
            for batcher in run.unreached:
                batcher.forget()
        observer.run_finished(ctx, None, exc)
        raise
    finally:
        unbind_context(token)
    observer.run_finished(ctx, outputs, None)
    return outputs


def _outputs(plan: Plan, params: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    return {name: get(params, results) for name, get in plan.outputs}


async def _run(plan: Plan, run: _Run) -> None:
    if plan.stages is None:
        await _run_graph(plan, run)
        return
    for stage in plan.stages:
        if stage.where == "thread":
            placement = stage.placement if plan.adaptive else None
            if placement is not None and placement.on_loop:  # shown to be short
                start = time.perf_counter()
                for s in stage.steps:
                    run.check_deadline()
                    run.results[s.id] = _call_sync(s, run)
                placement.ran_on_loop(time.perf_counter() - start)
                continue
            _ = run.stop  # made here, on the loop, before the thread can look at it
            await asyncio.to_thread(_run_sync_steps, stage.steps, run, placement)
        elif stage.where == "batch":
            s = stage.steps[0]
            run.check_deadline()
            run.results[s.id] = await _run_batched(s, run)
        else:
            for s in stage.steps:
                run.check_deadline()
                run.results[s.id] = await _run_step_here(s, run)


def _run_sync_steps(steps: list[CompiledStep], run: _Run, placement: Placement | None) -> None:
    """Consecutive blocking sync steps, one after the other, in one worker thread."""
    start = time.perf_counter()
    for s in steps:
        if run.stop.is_set():
            return
        run.results[s.id] = _call_sync(s, run)
    if placement is not None:
        placement.ran_in_thread(time.perf_counter() - start)


def _call_sync(s: CompiledStep, run: _Run) -> Any:
    if run._stop is not None and run._stop.is_set():
        raise _Stopped  # cancelled before this thread got to start the step
    observer = run.observer
    token = current_step.set(s.id)
    observer.step_started(s.id)
    start = time.perf_counter()
    try:
        kwargs = s.kwargs(run.params, run.results)
        result = _drain(s, s.fn(**kwargs), run) if s.is_generator else s.fn(**kwargs)
    except _Stopped:
        # the run was cancelled between two items: the step ends here, cancelled
        observer.step_finished(s.id, time.perf_counter() - start, asyncio.CancelledError())
        raise
    except (Exception, SystemExit) as exc:
        observer.step_finished(s.id, time.perf_counter() - start, exc)
        raise StepFailed(s.id, exc) from exc
    finally:
        current_step.reset(token)
    elapsed = time.perf_counter() - start
    observer.step_output(s.id, result)
    observer.step_finished(s.id, elapsed, None)
    return result


def _drain(s: CompiledStep, gen: Generator[Any, Any, Any], run: _Run) -> Any:
    items: list[Any] = []
    while True:
        if run.stop.is_set():
            gen.close()
            raise _Stopped
        try:
            item = next(gen)
        except StopIteration as done:
            return items if done.value is None else done.value
        run.observer.chunk(s.id, item)
        items.append(item)


async def _run_step_here(s: CompiledStep, run: _Run) -> Any:
    """An async step, or a non-blocking sync step, on the event loop."""
    if not s.is_async:
        return _call_sync(s, run)
    observer = run.observer
    token = current_step.set(s.id)
    observer.step_started(s.id)
    start = time.perf_counter()
    try:
        kwargs = s.kwargs(run.params, run.results)
        if s.is_generator:
            result: Any = await _drain_async(s, s.fn(**kwargs), run)
        else:
            result = await s.fn(**kwargs)
    except asyncio.CancelledError as exc:
        observer.step_finished(s.id, time.perf_counter() - start, exc)
        raise
    except (Exception, SystemExit) as exc:
        observer.step_finished(s.id, time.perf_counter() - start, exc)
        raise StepFailed(s.id, exc) from exc
    finally:
        current_step.reset(token)
    elapsed = time.perf_counter() - start
    observer.step_output(s.id, result)
    observer.step_finished(s.id, elapsed, None)
    return result


async def _drain_async(s: CompiledStep, agen: AsyncIterator[Any], run: _Run) -> list[Any]:
    items: list[Any] = []
    async for item in agen:
        run.observer.chunk(s.id, item)
        items.append(item)
    return items


async def _run_batched(s: CompiledStep, run: _Run) -> Any:
    """A batched step: this run's call joins the step's next batch; its own result back."""
    batcher = s.batcher
    assert batcher is not None
    observer = run.observer
    observer.step_started(s.id)
    start = time.perf_counter()
    try:
        kwargs = s.kwargs(run.params, run.results)
        run.unreached.discard(batcher)
        value, error = await batcher.call(kwargs)
    except asyncio.CancelledError as exc:
        observer.step_finished(s.id, time.perf_counter() - start, exc)
        raise
    except Exception as exc:  # reading its arguments
        observer.step_finished(s.id, time.perf_counter() - start, exc)
        raise StepFailed(s.id, exc) from exc
    if error is not None:
        observer.step_finished(s.id, time.perf_counter() - start, error)
        raise StepFailed(s.id, error) from error
    elapsed = time.perf_counter() - start
    observer.step_output(s.id, value)
    observer.step_finished(s.id, elapsed, None)
    return value


async def _run_step(s: CompiledStep, run: _Run) -> Any:
    if s.batcher is not None:
        return await _run_batched(s, run)
    if s.blocking:
        _ = run.stop
        return await asyncio.to_thread(_call_sync, s, run)
    return await _run_step_here(s, run)


async def _run_graph(plan: Plan, run: _Run) -> None:
    by_id = {s.id: s for s in plan.steps}
    waiting = {s.id: set(s.upstream) for s in plan.steps}
    ready = [s for s in plan.steps if not s.upstream]
    running: dict[asyncio.Task[Any], CompiledStep] = {}
    try:
        while ready or running:
            for s in ready:
                running[asyncio.ensure_future(_run_step(s, run))] = s
            ready = []
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            failure: BaseException | None = None
            for task in done:
                s = running.pop(task)
                exc = task.exception()
                if exc is not None:
                    failure = failure or exc
                    continue
                run.results[s.id] = task.result()
                for d in plan.dependents[s.id]:
                    waiting[d].discard(s.id)
                    if not waiting[d]:
                        ready.append(by_id[d])
            if failure is not None:
                raise failure
    finally:
        if running:
            run.halt()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
