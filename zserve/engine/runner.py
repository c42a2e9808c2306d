"""Run a compiled plan for one request: run-only, values in memory, nothing written.

Linear plans run as straight-line code, with one thread hop per run of consecutive blocking sync
steps. Other plans start every step as soon as its inputs are ready, so parallel branches take
the time of the slowest branch; the first failing step cancels its siblings.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from zserve.engine.context import RunContext, _current
from zserve.engine.plan import CompiledStep, Plan
from zserve.errors import ExecutionFailed, ExecutionTimeout, StepFailed

__all__ = ["execute"]


async def execute(
    plan: Plan,
    params: dict[str, Any],
    *,
    job_id: str,
    capture: str = "none",
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run ``plan`` with validated ``params``; return its named outputs.

    Raises StepFailed (the step's exception is its ``__cause__``) or ExecutionTimeout.
    """
    token = _current.set(
        RunContext(job_id=job_id, pipeline=plan.name, capture=capture, parameters=params)
    )
    try:
        results: dict[str, Any] = {}
        if timeout_s is None:
            await _run(plan, params, results)
        else:
            try:
                async with asyncio.timeout(timeout_s):
                    await _run(plan, params, results)
            except TimeoutError:
                raise ExecutionTimeout(
                    f"Pipeline '{plan.name}' did not finish within {timeout_s:g} s"
                ) from None
        return _outputs(plan, params, results)
    finally:
        _current.reset(token)


def _outputs(plan: Plan, params: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    for node, arity in plan.arity.items():
        value = results[node]
        if not isinstance(value, tuple | list) or len(value) != arity:
            got = f"{len(value)} values" if isinstance(value, tuple | list) else repr(value)[:80]
            raise ExecutionFailed(
                f"Pipeline '{plan.name}' is annotated to return {arity} values "
                f"(output_0..output_{arity - 1}) but returned {got}"
            )
    return {name: get(params, results) for name, get in plan.outputs}


async def _run(plan: Plan, params: dict[str, Any], results: dict[str, Any]) -> None:
    if plan.stages is None:
        await _run_graph(plan, params, results)
        return
    for stage in plan.stages:
        if stage.where == "thread":
            stop = threading.Event()
            try:
                await asyncio.to_thread(_run_sync_steps, stage.steps, params, results, stop)
            except asyncio.CancelledError:
                stop.set()  # timed out or cancelled: the thread starts no further step
                raise
            continue
        for s in stage.steps:
            try:
                kwargs = s.kwargs(params, results)
                results[s.id] = await s.fn(**kwargs) if s.is_async else s.fn(**kwargs)
            except (Exception, SystemExit) as exc:
                raise StepFailed(s.id, exc) from exc


def _run_sync_steps(
    steps: list[CompiledStep],
    params: dict[str, Any],
    results: dict[str, Any],
    stop: threading.Event,
) -> None:
    for s in steps:
        if stop.is_set():
            return
        try:
            results[s.id] = s.fn(**s.kwargs(params, results))
        except (Exception, SystemExit) as exc:
            raise StepFailed(s.id, exc) from exc


async def _run_step(s: CompiledStep, params: dict[str, Any], results: dict[str, Any]) -> Any:
    try:
        kwargs = s.kwargs(params, results)
        if s.is_async:
            return await s.fn(**kwargs)
        if s.blocking:
            return await asyncio.to_thread(s.fn, **kwargs)
        return s.fn(**kwargs)
    except (Exception, SystemExit) as exc:
        raise StepFailed(s.id, exc) from exc


async def _run_graph(plan: Plan, params: dict[str, Any], results: dict[str, Any]) -> None:
    by_id = {s.id: s for s in plan.steps}
    waiting = {s.id: set(s.upstream) for s in plan.steps}
    ready = [s for s in plan.steps if not s.upstream]
    running: dict[asyncio.Task[Any], CompiledStep] = {}
    try:
        while ready or running:
            for s in ready:
                running[asyncio.ensure_future(_run_step(s, params, results))] = s
            ready = []
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            failure: BaseException | None = None
            for task in done:
                s = running.pop(task)
                exc = task.exception()
                if exc is not None:
                    failure = failure or exc
                    continue
                results[s.id] = task.result()
                for d in plan.dependents[s.id]:
                    waiting[d].discard(s.id)
                    if not waiting[d]:
                        ready.append(by_id[d])
            if failure is not None:
                raise failure
    finally:
        if running:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
