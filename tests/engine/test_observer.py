"""Observers of a run: run and output hooks, several listeners at once, the order they hear in."""

from __future__ import annotations

from typing import Any

import pytest

from zserve import get_context, pipeline, step
from zserve.engine.context import RunContext
from zserve.engine.observer import SILENT, Observer, Observers, observe
from zserve.engine.plan import compile_plan
from zserve.engine.runner import execute
from zserve.errors import StepFailed


class Recorder(Observer):
    """Writes down every hook call, as a tracked-mode recorder would."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def run_started(self, ctx: RunContext) -> None:
        self.calls.append(("run_started", ctx.job_id, dict(ctx.parameters)))

    def run_finished(
        self, ctx: RunContext, outputs: dict[str, Any] | None, error: BaseException | None
    ) -> None:
        self.calls.append(("run_finished", outputs, type(error).__name__ if error else None))

    def step_started(self, step: str) -> None:
        self.calls.append(("step_started", step))

    def step_output(self, step: str, value: Any) -> None:
        self.calls.append(("step_output", step, value))

    def step_finished(self, step: str, seconds: float, error: BaseException | None) -> None:
        assert seconds >= 0
        self.calls.append(("step_finished", step, type(error).__name__ if error else None))

    def chunk(self, step: str, item: Any) -> None:
        self.calls.append(("chunk", step, item))

    def progress(self, step: str, data: Any) -> None:
        self.calls.append(("progress", step, data))


@step
def words(text: str) -> list[str]:
    get_context().emit({"done": 1, "of": 1})
    return text.split()


@step(blocking=False)
def count(items: list[str]) -> int:
    return len(items)


@pipeline
def counting(text: str) -> int:
    return count(words(text))


@step
def tokens(n: int):  # type: ignore[no-untyped-def]
    yield from range(n)


@pipeline
def generating(n: int) -> list[int]:
    return tokens(n)


@step
def explode(x: int) -> int:
    raise ValueError(f"bad {x}")


@pipeline
def exploding(x: int) -> int:
    return explode(x)


async def run(pipe: Any, observers: tuple[Observer, ...], **params: Any) -> dict[str, Any]:
    plan = compile_plan(pipe)
    values = plan.validate_parameters(params)
    return await execute(plan, values, job_id="job-7", observers=observers)


@pytest.mark.anyio
async def test_every_observer_hears_the_whole_run_in_order() -> None:
    first, second = Recorder(), Recorder()
    assert await run(counting, (first, second), text="a b c") == {"output": 3}
    assert (
        first.calls
        == second.calls
        == [
            ("run_started", "job-7", {"text": "a b c"}),
            ("step_started", "words"),
            ("progress", "words", {"done": 1, "of": 1}),
            ("step_output", "words", ["a", "b", "c"]),
            ("step_finished", "words", None),
            ("step_started", "count"),
            ("step_output", "count", 3),
            ("step_finished", "count", None),
            ("run_finished", {"output": 3}, None),
        ]
    )


@pytest.mark.anyio
async def test_generator_steps_report_chunks_and_their_items_as_output() -> None:
    recorder = Recorder()
    await run(generating, (recorder,), n=3)
    assert [c for c in recorder.calls if c[0] in ("chunk", "step_output")] == [
        ("chunk", "tokens", 0),
        ("chunk", "tokens", 1),
        ("chunk", "tokens", 2),
        ("step_output", "tokens", [0, 1, 2]),
    ]


@pytest.mark.anyio
async def test_a_failed_run_reports_the_error_and_no_output() -> None:
    recorder = Recorder()
    with pytest.raises(StepFailed):
        await run(exploding, (recorder,), x=1)
    assert recorder.calls[-2:] == [
        ("step_finished", "explode", "ValueError"),
        ("run_finished", None, "StepFailed"),
    ]
    assert not any(c[0] == "step_output" for c in recorder.calls)


def test_observe_folds_listeners_into_one() -> None:
    one, two = Recorder(), Recorder()
    assert observe() is SILENT
    assert observe(None, SILENT) is SILENT
    assert observe(one) is one
    assert observe(None, one) is one
    both = observe(one, two)
    assert isinstance(both, Observers) and both.observers == (one, two)


@pytest.mark.anyio
async def test_progress_costs_nothing_when_nobody_listens() -> None:
    # With no observer, emit() has no listener to call: the run still completes normally.
    assert await run(counting, (), text="x y") == {"output": 2}
