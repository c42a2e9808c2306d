"""Batched steps in every position of a plan (fan-out siblings, between plain steps, taken
apart), tracked mode, the batch hook, several event loops, and how a batched step is defined."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.engine.batched_steps import DEADLINE_S, called, calls, double, doubling, run_all
from zserve import Resource, get_context, pipeline, step
from zserve.engine.capture import CaptureLimits, resolve_request
from zserve.engine.plan import compile_plan
from zserve.engine.recorder import RunRecorder
from zserve.engine.runner import execute
from zserve.engine.worker import Worker
from zserve.errors import PipelineDefinitionError, StepFailed

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


@step
def prepare(x: int) -> int:
    return x + 100


@step(batch=16)
async def embed(x: list[int]) -> list[int]:
    called("embed", len(x))
    return [v * 3 for v in x]


@step(batch=16, blocking=False)
def classify(x: list[int]) -> list[str]:
    called("classify", len(x))
    return ["big" if v > 150 else "small" for v in x]


@step
def join(a: int, b: str, c: int) -> str:
    return f"{a}/{b}/{c}"


@pipeline
def fanout(x: int) -> str:
    base = prepare(x)
    return join(embed(base), classify(base), double(x))


async def test_fan_out_siblings_are_batched_each_with_its_own_batcher() -> None:
    plan = compile_plan(fanout)
    assert not plan.linear and len(plan.batchers) == 3
    results = await run_all(plan, [{"x": i} for i in range(40, 64)])
    assert results == [
        {"output": f"{(i + 100) * 3}/{'big' if i + 100 > 150 else 'small'}/{i * 2}"}
        for i in range(40, 64)
    ]
    loop_thread = threading.current_thread().name
    assert all(name == loop_thread for _, name in calls["classify"])  # blocking=False
    assert all(name == loop_thread for _, name in calls["embed"])  # async
    assert all(name != loop_thread for _, name in calls["double"])  # sync: a thread
    assert sum(size for size, _ in calls["embed"]) == 24


@step
def finish(y: int) -> str:
    return f"y={y}"


@pipeline
def linear(x: int) -> str:
    return finish(double(prepare(x)))


async def test_a_batched_step_between_plain_steps_of_a_linear_plan() -> None:
    plan = compile_plan(linear)
    assert plan.stages is not None
    assert [stage.where for stage in plan.stages] == ["thread", "batch", "thread"]
    assert plan.stages[1].placement is None  # never promoted to the loop
    results = await run_all(plan, [{"x": i} for i in range(20)])
    assert results == [{"output": f"y={(i + 100) * 2}"} for i in range(20)]


async def test_tracked_mode_records_each_runs_own_values() -> None:
    plan = compile_plan(linear)
    limits = CaptureLimits()
    recorders = [
        RunRecorder(
            resolve_request(limits, override="full"),
            job_id=f"job-{i}",
            pipeline=plan.name,
            deployment_id="dep-1",
            limits=limits,
        )
        for i in range(12)
    ]
    runs = [
        execute(plan, {"x": i}, job_id=f"job-{i}", observers=(recorders[i],)) for i in range(12)
    ]
    await asyncio.wait_for(asyncio.gather(*runs), DEADLINE_S)
    assert max(size for size, _ in calls["double"]) > 1  # the runs did share calls
    for i, recorder in enumerate(recorders):
        record = recorder.record
        assert record is not None and record.status == "completed"
        steps = {s.name: s for s in record.steps}
        assert steps["double"].status == "completed" and steps["double"].outputs is not None
        assert steps["double"].outputs["output"].value == (i + 100) * 2
        assert steps["finish"].outputs is not None
        assert steps["finish"].outputs["output"].value == f"y={(i + 100) * 2}"


@step(batch=4)
def split(x: list[int]) -> list[tuple[int, int]]:
    return [(v, -v) if v != 7 else (v,) for v in x]  # type: ignore[misc]


@pipeline
def unpacked(x: int) -> int:
    a, b = split(x)
    return join_ints(a, b)


@step
def join_ints(a: int, b: int) -> int:
    return a * 1000 + b


async def test_a_batched_step_taken_apart_is_checked_item_by_item() -> None:
    plan = compile_plan(unpacked)
    results = await run_all(plan, [{"x": 5}, {"x": 7}, {"x": 9}])
    assert results[0] == {"output": 5000 - 5} and results[2] == {"output": 9000 - 9}
    assert isinstance(results[1], StepFailed) and "returned 1 values" in str(results[1])


@step(batch=2)
def nosy(x: list[int]) -> list[int]:
    get_context()
    return x


@pipeline
def asking(x: int) -> int:
    return nosy(x)


async def test_get_context_in_a_batched_step_says_why_it_is_not_there() -> None:
    plan = compile_plan(asking)
    with pytest.raises(StepFailed, match="not available in a batched step"):
        await execute(plan, {"x": 1}, job_id="j")


async def test_every_batch_is_told_to_the_hook_with_its_size_and_wait() -> None:
    plan = compile_plan(doubling)
    told: list[tuple[str, int, float]] = []
    plan.on_batch = lambda name, size, wait: told.append((name, size, wait))
    assert plan.on_batch is not None
    await run_all(plan, [{"x": i} for i in range(12)])
    assert sum(size for _, size, _ in told) == 12
    assert all(name == "double" and wait >= 0 for name, _, wait in told)
    assert [size for _, size, _ in told] == [size for size, _ in calls["double"]]


async def test_a_batcher_serves_runs_of_a_new_loop_once_idle() -> None:
    plan = compile_plan(doubling)
    assert await execute(plan, {"x": 1}, job_id="a") == {"output": 2}

    def elsewhere() -> Any:
        return asyncio.run(execute(plan, {"x": 2}, job_id="b"))

    assert await asyncio.to_thread(elsewhere) == {"output": 4}
    assert await execute(plan, {"x": 3}, job_id="c") == {"output": 6}


# -- the definition ------------------------------------------------------------------------------


def test_the_plan_describes_its_batched_steps() -> None:
    plan = compile_plan(fanout)
    entries = {e["name"]: e for e in plan.spec["steps"]}
    assert entries["embed"]["batch"] == {"max_size": 16, "max_wait_ms": 5.0}
    assert entries["double"]["batch"] == {"max_size": 8, "max_wait_ms": 5.0}
    assert "batch" not in entries["prepare"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch": 0}, "batch must be a whole number of calls, 1 or more"),
        ({"batch": True}, "batch must be a whole number"),
        ({"batch": 2.5}, "batch must be a whole number"),
        ({"batch": 4, "batch_wait_ms": -1}, "batch_wait_ms must be a number of milliseconds"),
        ({"batch": 4, "batch_wait_ms": float("nan")}, "batch_wait_ms must be a number"),
        ({"batch_wait_ms": 3}, "batch_wait_ms applies to a batched step only"),
    ],
)
def test_bad_batch_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=message):
        step(**options)(lambda x: x)


def test_a_generator_step_cannot_be_batched() -> None:
    def tokens(x: list[int]) -> Any:
        yield from x

    with pytest.raises(PipelineDefinitionError, match="generator step cannot be batched"):
        step(batch=4)(tokens)


def test_a_batched_step_is_never_adaptive() -> None:
    assert double.batch == 8 and not double.adaptive and double.blocking


class _Scaler:
    def __init__(self) -> None:
        self.factor = 10


built: list[_Scaler] = []


def load_scaler() -> _Scaler:
    built.append(_Scaler())
    return built[-1]


@step(batch=8)
def scale(x: list[int], scaler: _Scaler = Resource(load_scaler)) -> list[int]:
    assert isinstance(scaler, _Scaler), "a resource is passed once, not as a list"
    called("scale", len(x))
    return [v * scaler.factor for v in x]


@pipeline
def scaling(x: int) -> int:
    return scale(x)


async def test_a_batched_step_gets_its_resource_once_not_a_list_of_them() -> None:
    plan = compile_plan(scaling)
    built.clear()
    async with Worker(plan):
        results = await run_all(plan, [{"x": i} for i in range(8)])
    assert results == [{"output": i * 10} for i in range(8)]
    assert len(built) == 1
    assert sum(size for size, _ in calls["scale"]) == 8
