"""A batch that ends badly still answers every call, and the calls queued behind it go on: a
batch whose task is cancelled, a function on the loop that raises a BaseException, a batch hook
that raises, an observer that fails a run before it starts. Also: a result that is a sequence
but not a list (a NumPy array) is split like a list.

(Each of these once left calls waiting for ever; found by a review of issue 13's change.)
"""

from __future__ import annotations

import array
import asyncio
from typing import Any

import pytest

from tests.engine.batched_steps import DEADLINE_S, called, calls
from zserve import pipeline, step
from zserve.engine.context import RunContext
from zserve.engine.observer import Observer
from zserve.engine.plan import compile_plan
from zserve.engine.runner import execute
from zserve.errors import StepFailed

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


#: set by a test: the first batch of ``cancelled_inside`` awaits this future, which the test
#: cancels (as a client pool the model awaits might)
INNER: list[asyncio.Future[None]] = []


@step(batch=4, batch_wait_ms=10_000)
async def cancelled_inside(x: list[int]) -> list[int]:
    called("cancelled_inside", len(x))
    if INNER:
        await INNER.pop()
    return [v + 1 for v in x]


@pipeline
def cancelling(x: int) -> int:
    return cancelled_inside(x)


async def _until(predicate: Any, what: str) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not predicate():
            await asyncio.sleep(0.005)
    assert predicate(), what


async def test_a_batch_whose_task_is_cancelled_fails_its_runs_and_the_queue_goes_on() -> None:
    plan = compile_plan(cancelling)
    batcher = plan.batchers[0]
    inner: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    INNER.append(inner)
    first = asyncio.ensure_future(execute(plan, {"x": 1}, job_id="first"))
    await _until(lambda: batcher.running, "the first batch to run")
    second = asyncio.ensure_future(execute(plan, {"x": 2}, job_id="second"))
    await _until(lambda: batcher.queued == 1, "the second call to queue behind it")
    inner.cancel()  # the batch's task ends cancelled: nobody cancelled the runs
    with pytest.raises(StepFailed, match="cancelled while it ran"):
        await asyncio.wait_for(first, DEADLINE_S)
    assert await asyncio.wait_for(second, DEADLINE_S) == {"output": 3}


class Halt(BaseException):
    """Not an Exception: what a test harness or a library may raise."""


@step(batch=4, batch_wait_ms=10_000, blocking=False)
def halting(x: list[int]) -> list[int]:
    called("halting", len(x))
    if 13 in x:
        raise Halt("thirteen")
    return x


@pipeline
def halts(x: int) -> int:
    return halting(x)


async def test_a_function_on_the_loop_raising_a_base_exception_does_not_wedge_the_step() -> None:
    plan = compile_plan(halts)
    with pytest.raises(StepFailed):
        await asyncio.wait_for(execute(plan, {"x": 13}, job_id="a"), DEADLINE_S)
    assert not plan.batchers[0].running
    assert await asyncio.wait_for(execute(plan, {"x": 7}, job_id="b"), DEADLINE_S) == {"output": 7}


@step(batch=4, batch_wait_ms=10_000)
def plain(x: list[int]) -> list[int]:
    return [v * 5 for v in x]


@pipeline
def plainly(x: int) -> int:
    return plain(x)


async def test_a_batch_hook_that_raises_loses_no_call() -> None:
    plan = compile_plan(plainly)

    def hook(step: str, size: int, waited: float) -> None:
        raise RuntimeError("metrics are broken")

    plan.on_batch = hook
    runs = [execute(plan, {"x": i}, job_id=f"j{i}") for i in range(3)]
    results = await asyncio.wait_for(asyncio.gather(*runs), DEADLINE_S)
    assert results == [{"output": i * 5} for i in range(3)]


class FailsToStart(Observer):
    def run_started(self, ctx: RunContext) -> None:
        raise RuntimeError("observer broken")


async def test_a_run_that_fails_before_it_starts_is_not_counted_as_coming() -> None:
    plan = compile_plan(plainly)
    with pytest.raises(RuntimeError, match="observer broken"):
        await execute(plan, {"x": 1}, job_id="broken", observers=(FailsToStart(),))
    assert plan.batchers[0].expected == 0
    # so a lone run still starts its batch at once, not after the 10 s wait
    assert await asyncio.wait_for(execute(plan, {"x": 2}, job_id="lone"), DEADLINE_S / 2) == {
        "output": 10
    }


@step(batch=4)
def as_array(x: list[int]) -> array.array[int]:
    return array.array("q", [v * 7 for v in x])


@pipeline
def arrays(x: int) -> int:
    return as_array(x)


async def test_a_sequence_that_is_not_a_list_is_split_like_one() -> None:
    plan = compile_plan(arrays)
    runs = [execute(plan, {"x": i}, job_id=f"a{i}") for i in range(3)]
    assert await asyncio.wait_for(asyncio.gather(*runs), DEADLINE_S) == [
        {"output": i * 7} for i in range(3)
    ]
