"""Running pipelines that take a step's several outputs apart (``a, b = split(x)``): linear and
graph plans, sync and async steps, run-only and tracked, and a step returning too few values."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from tests.unpacking_pipelines import (
    graph_unpacking,
    linear_unpacking,
    miscounting,
    named_tuple_unpacking,
    repeat,
    shout,
    split,
)
from zserve import pipeline, step
from zserve.engine.capture import CaptureLimits, resolve_request
from zserve.engine.plan import compile_plan
from zserve.engine.recorder import RunRecorder
from zserve.engine.runner import execute
from zserve.errors import StepFailed


async def run(pipe: Any, **params: Any) -> dict[str, Any]:
    plan = compile_plan(pipe)
    return await execute(plan, plan.validate_parameters(params), job_id="job-1")


@pytest.mark.anyio
async def test_a_linear_plan_feeds_each_item_to_its_step() -> None:
    plan = compile_plan(linear_unpacking)
    assert plan.linear
    assert [[s.id for s in stage.steps] for stage in plan.stages or []] == [
        ["split"],
        ["shout", "repeat"],  # async shout and the blocking=False repeat, on the loop
    ]
    assert await run(linear_unpacking, text="hey you two") == {
        "output_0": "HEY-HEY",
        "output_1": 2,
    }


@pytest.mark.anyio
async def test_a_graph_plan_feeds_indexed_items_and_the_whole_output() -> None:
    plan = compile_plan(graph_unpacking)
    assert not plan.linear
    assert await run(graph_unpacking, text="ho ho ho") == {
        "loud": "HO",
        "echo": "ho-ho",
        "parts": ("ho", 2),
    }


@pytest.mark.anyio
async def test_an_async_step_returning_a_named_tuple_is_unpacked() -> None:
    assert await run(named_tuple_unpacking, n=7) == {"output_0": 3, "output_1": 4, "output_2": 12}


def test_only_the_steps_taken_apart_are_wrapped_with_the_check() -> None:
    steps = {s.id: s for s in compile_plan(linear_unpacking).steps}
    assert steps["split"].fn is not split.fn
    assert steps["shout"].fn is shout.fn and steps["repeat"].fn is repeat.fn


@pytest.mark.anyio
async def test_a_step_returning_the_wrong_number_of_values_fails_naming_it() -> None:
    with pytest.raises(StepFailed) as info:
        await run(miscounting, text="x")
    assert info.value.step == "miscount"
    assert str(info.value).startswith("Step 'miscount' raised ValueError: returned 3 values, ")
    assert "expected 2" in str(info.value)


@step
async def lonely(n: int) -> tuple[int, int]:
    return n  # type: ignore[return-value]


@step
def seen(n: int) -> int:
    raise AssertionError("must not run: its input never existed")


@pytest.mark.anyio
async def test_an_async_step_returning_one_value_fails_before_its_items_are_used() -> None:
    @pipeline
    def p(n: int) -> int:
        a, _ = lonely(n)
        return seen(a)

    with pytest.raises(StepFailed, match=r"Step 'lonely' .*: returned int, expected 2"):
        await run(p, n=1)


@step
def as_list(n: int) -> tuple[int, int]:
    return [n, -n]  # type: ignore[return-value]


@pytest.mark.anyio
async def test_a_list_of_the_right_length_is_taken_apart_too() -> None:
    @pipeline
    def p(n: int) -> tuple[int, int]:
        a, b = as_list(n)
        return b, a

    assert await run(p, n=5) == {"output_0": -5, "output_1": 5}


async def tracked(pipe: Any, mode: str, **params: Any) -> dict[str, Any]:
    limits = CaptureLimits()
    plan = compile_plan(pipe)
    recorder = RunRecorder(
        resolve_request(limits, override=mode), job_id="job-1", pipeline=plan.name,
        deployment_id="dep-1", limits=limits,
    )  # fmt: skip
    with contextlib.suppress(StepFailed):
        await execute(plan, plan.validate_parameters(params), job_id="job-1",
                      observers=(recorder,))  # fmt: skip
    assert recorder.record is not None
    return recorder.record.to_dict()


@pytest.mark.anyio
async def test_a_tracked_run_records_the_step_output_once_as_its_tuple() -> None:
    doc = await tracked(linear_unpacking, "full", text="la la la")
    assert doc["status"] == "completed"
    steps = {s["name"]: s for s in doc["steps"]}
    assert list(steps) == ["split", "shout", "repeat"]
    assert list(steps["split"]["outputs"]) == ["output"]
    assert steps["split"]["outputs"]["output"]["value"] == ["la", 2]
    assert steps["repeat"]["outputs"]["output"]["value"] == "LA-LA"


@pytest.mark.anyio
async def test_a_tracked_run_records_the_miscounting_step_as_failed() -> None:
    doc = await tracked(miscounting, "full", text="x")
    assert doc["status"] == "failed"
    (only,) = doc["steps"]
    assert only["name"] == "miscount" and only["status"] == "failed"
    assert "outputs" not in only
    assert only["error"]["type"] == "ValueError" and "expected 2" in only["error"]["message"]
