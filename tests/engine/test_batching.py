"""Dynamic batching in the engine: concurrent runs of a plan share calls of a batched step, each
gets its own result, and a failing item, a cancelled or timed-out run, leaves the others alone.

Real runs of ``execute`` on the test's loop; batches are held open with Events, never sleeps,
and the only deadlines are generous ones that fail a test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tests.engine.batched_steps import DEADLINE_S, called, calls, doubling, run_all
from zserve import pipeline, step
from zserve.engine.plan import Plan, compile_plan
from zserve.engine.runner import execute
from zserve.errors import ExecutionTimeout, StepFailed

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


async def test_32_concurrent_runs_share_calls_of_at_most_8_and_each_gets_its_own_answer() -> None:
    plan = compile_plan(doubling)
    results = await run_all(plan, [{"x": i} for i in range(32) if i != 13])
    assert results == [{"output": i * 2} for i in range(32) if i != 13]
    sizes = [size for size, _ in calls["double"]]
    assert max(sizes) <= 8 and sum(sizes) == 31
    assert len(sizes) < 31  # some calls were shared
    assert all(name != threading.current_thread().name for _, name in calls["double"])


async def test_an_exception_returned_for_one_item_fails_that_run_only() -> None:
    plan = compile_plan(doubling)
    results = await run_all(plan, [{"x": i} for i in range(10, 16)])
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], StepFailed)
    assert failed[0].step == "double" and "odd item 13" in str(failed[0])
    assert isinstance(failed[0].__cause__, ValueError)
    assert [r for r in results if not isinstance(r, BaseException)] == [
        {"output": 2 * i} for i in (10, 11, 12, 14, 15)
    ]


# -- held batches: an async batched step that waits for the test's word ---------------------------

held: dict[str, asyncio.Event] = {}


@step(batch=8, batch_wait_ms=0)
async def gated(x: list[int]) -> list[int]:
    called("gated", len(x))
    on_loop = threading.current_thread() is threading.main_thread()
    assert on_loop  # an async batched step runs on the loop
    await held["release"].wait()
    if -1 in x:
        raise RuntimeError("the model fell over")
    return [v * 10 for v in x if v != -2]  # drops -2: a result of the wrong length


@pipeline
def gating(x: int) -> int:
    return gated(x)


async def until(predicate: Any, what: str) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not predicate():
            await asyncio.sleep(0.001)


async def held_plan() -> tuple[Plan, asyncio.Task[Any]]:
    """A plan whose first batch (x=0) runs and is held until ``held["release"]`` is set."""
    held["release"] = asyncio.Event()
    plan = compile_plan(gating)
    first = asyncio.ensure_future(execute(plan, {"x": 0}, job_id="first"))
    batcher = plan.batchers[0]
    await until(lambda: batcher.running, "the first batch runs")
    return plan, first


async def test_a_raise_fails_every_item_of_its_batch() -> None:
    plan, first = await held_plan()
    batcher = plan.batchers[0]
    runs = [execute(plan, {"x": i}, job_id=f"j{i}") for i in (1, -1, 2)]
    gathered = asyncio.gather(*runs, return_exceptions=True)
    await until(lambda: batcher.queued == 3, "three calls queued")
    held["release"].set()
    results = await asyncio.wait_for(gathered, DEADLINE_S)
    assert all(isinstance(r, StepFailed) and "the model fell over" in str(r) for r in results)
    assert await first == {"output": 0}
    assert [size for size, _ in calls["gated"]] == [1, 3]


async def test_a_result_of_the_wrong_length_fails_every_item_naming_both_lengths() -> None:
    plan, first = await held_plan()
    batcher = plan.batchers[0]
    gathered = asyncio.gather(
        *(execute(plan, {"x": i}, job_id=f"j{i}") for i in (1, -2, 3, 4)), return_exceptions=True
    )
    await until(lambda: batcher.queued == 4, "four calls queued")
    held["release"].set()
    results = await asyncio.wait_for(gathered, DEADLINE_S)
    assert all(isinstance(r, StepFailed) for r in results)
    assert "returned 3 results for a batch of 4 calls" in str(results[0])
    assert await first == {"output": 0}


async def test_a_run_cancelled_while_queued_leaves_the_next_batch_without_it() -> None:
    plan, first = await held_plan()
    batcher = plan.batchers[0]
    runs = [asyncio.ensure_future(execute(plan, {"x": i}, job_id=f"j{i}")) for i in (1, 2, 3)]
    await until(lambda: batcher.queued == 3, "three calls queued")
    runs[1].cancel()
    await until(lambda: batcher.queued == 2, "the cancelled call withdrawn")
    held["release"].set()
    assert await asyncio.wait_for(first, DEADLINE_S) == {"output": 0}
    assert await asyncio.wait_for(runs[0], DEADLINE_S) == {"output": 10}
    assert await asyncio.wait_for(runs[2], DEADLINE_S) == {"output": 30}
    with pytest.raises(asyncio.CancelledError):
        await runs[1]
    assert [size for size, _ in calls["gated"]] == [1, 2]


async def test_a_run_cancelled_while_its_batch_runs_does_not_disturb_the_others() -> None:
    plan, first = await held_plan()
    batcher = plan.batchers[0]
    runs = [asyncio.ensure_future(execute(plan, {"x": i}, job_id=f"j{i}")) for i in (1, 2, 3)]
    await until(lambda: batcher.queued == 3, "three calls queued")
    released, held["release"] = held["release"], asyncio.Event()
    released.set()  # the first batch ends; the three form the next one, which is held
    assert await asyncio.wait_for(first, DEADLINE_S) == {"output": 0}
    await until(lambda: batcher.running and batcher.queued == 0, "the batch of three runs")
    runs[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await runs[0]
    held["release"].set()
    assert await asyncio.wait_for(asyncio.gather(*runs[1:]), DEADLINE_S) == [
        {"output": 20},
        {"output": 30},
    ]
    assert [size for size, _ in calls["gated"]] == [1, 3]
    assert await asyncio.wait_for(execute(plan, {"x": 4}, job_id="after"), DEADLINE_S) == {
        "output": 40
    }


async def test_a_run_that_times_out_in_the_queue_leaves_the_others() -> None:
    plan, first = await held_plan()
    batcher = plan.batchers[0]
    late = asyncio.ensure_future(execute(plan, {"x": 1}, job_id="late", timeout_s=0.05))
    other = asyncio.ensure_future(execute(plan, {"x": 2}, job_id="other"))
    with pytest.raises(ExecutionTimeout):
        await asyncio.wait_for(late, DEADLINE_S)
    assert batcher.queued == 1
    held["release"].set()
    assert await asyncio.wait_for(other, DEADLINE_S) == {"output": 20}
    await first


# -- when a batch starts --------------------------------------------------------------------------


@step(batch=32, batch_wait_ms=10_000)
def patient(x: list[int]) -> list[int]:
    called("patient", len(x))
    return [v + 1 for v in x]


@pipeline
def lone(x: int) -> int:
    return patient(x)


async def test_a_lone_run_does_not_wait_for_others_that_cannot_come() -> None:
    plan = compile_plan(lone)
    for i in range(3):  # each is alone: its batch starts at once, not after 10 s
        assert await asyncio.wait_for(execute(plan, {"x": i}, job_id=f"j{i}"), 3.0) == {
            "output": i + 1
        }
    assert [size for size, _ in calls["patient"]] == [1, 1, 1]


async def test_a_run_that_fails_before_the_step_no_longer_holds_a_batch_back() -> None:
    plan = compile_plan(slow_first)
    held["upstream"] = asyncio.Event()
    doomed = asyncio.ensure_future(execute(plan, {"x": -1}, job_id="doomed"))
    waiting = asyncio.ensure_future(execute(plan, {"x": 1}, job_id="waiting"))
    batcher = plan.batchers[0]
    await until(lambda: batcher.queued == 1, "the second run queued")
    held["upstream"].set()  # the first run fails upstream: the queued one goes at once
    assert await asyncio.wait_for(waiting, 3.0) == {"output": 2}
    with pytest.raises(StepFailed):
        await doomed


async def upstream_gate(x: int) -> int:
    if x < 0:
        await held["upstream"].wait()
        raise ValueError("no negative numbers")
    return x


gate_step = step(upstream_gate)


@pipeline
def slow_first(x: int) -> int:
    return patient(gate_step(x))


@step(batch=32, batch_wait_ms=20)
def hurried(x: list[int]) -> list[int]:
    called("hurried", len(x))
    return [v + 1 for v in x]


@pipeline
def held_upstream(x: int) -> int:
    return hurried(gate_step(x))


async def test_a_batch_starts_after_its_wait_while_another_run_is_still_upstream() -> None:
    plan = compile_plan(held_upstream)
    held["upstream"] = asyncio.Event()
    behind = asyncio.ensure_future(execute(plan, {"x": -1}, job_id="behind"))
    # the second run reaches the step while the first is held upstream: only the timer starts it
    assert await asyncio.wait_for(execute(plan, {"x": 1}, job_id="ahead"), DEADLINE_S) == {
        "output": 2
    }
    assert not behind.done() and [size for size, _ in calls["hurried"]] == [1]
    held["upstream"].set()
    with pytest.raises(StepFailed):
        await behind
