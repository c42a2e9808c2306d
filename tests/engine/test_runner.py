from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from zserve import get_context, pipeline, step
from zserve.engine.plan import compile_plan
from zserve.engine.runner import execute
from zserve.errors import ExecutionTimeout, StepFailed


async def run(pipe: Any, **params: Any) -> dict[str, Any]:
    plan = compile_plan(pipe)
    return await execute(plan, plan.validate_parameters(params), job_id="job-1")


@step
def fetch(city: str) -> dict[str, Any]:
    return {"city": city, "temp": 25}


@step
def analyze(data: dict[str, Any], days: int) -> str:
    return f"{data['city']}:{days}"


@pipeline
def chain(city: str, days: int = 1) -> str:
    return analyze(fetch(city), days)


@pytest.mark.anyio
async def test_linear_chain_runs_with_defaults_and_injected_outputs() -> None:
    plan = compile_plan(chain)
    assert plan.linear
    assert [s.where for s in plan.stages or []] == ["thread"]  # one hop for both sync steps
    assert await run(chain, city="Paris") == {"output": "Paris:1"}
    assert await run(chain, city="Oslo", days=3) == {"output": "Oslo:3"}


BARRIER_TIMEOUT = 10


def make_parallel_pipeline() -> Any:
    """Two branches that can only both finish if they run at the same time."""
    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT)
    arrived = asyncio.Event()

    @step
    def left(n: int) -> int:
        barrier.wait()  # blocks until the other sync branch is also running
        return n + 1

    @step
    def right(n: int) -> int:
        barrier.wait()
        return n * 10

    @step
    async def third(n: int) -> int:
        arrived.set()
        return n

    @step
    def join(a: int, b: int, c: int) -> int:
        return a + b + c

    @pipeline
    def parallel(n: int) -> int:
        return join(left(n), right(n), third(n))

    return parallel


@pytest.mark.anyio
async def test_independent_branches_run_concurrently() -> None:
    pipe = make_parallel_pipeline()
    assert not compile_plan(pipe).linear
    # Sequential execution would leave each barrier.wait() alone and raise BrokenBarrierError.
    assert await run(pipe, n=2) == {"output": 3 + 20 + 2}


@pytest.mark.anyio
async def test_a_failing_step_names_itself_and_cancels_its_siblings() -> None:
    cancelled = asyncio.Event()

    @step
    def boom(n: int) -> int:
        raise KeyError("missing thing")

    @step
    async def slow(n: int) -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return n

    @step
    def join(a: int, b: int) -> int:
        return a + b

    @pipeline
    def failing(n: int) -> int:
        return join(boom(n), slow(n))

    plan = compile_plan(failing)
    with pytest.raises(StepFailed) as info:
        await execute(plan, {"n": 1}, job_id="j")
    assert info.value.step == "boom"
    assert str(info.value) == "Step 'boom' raised KeyError: 'missing thing'"
    assert isinstance(info.value.__cause__, KeyError)
    assert cancelled.is_set()


@pytest.mark.anyio
async def test_failure_in_a_linear_chain_names_the_step() -> None:
    with pytest.raises(StepFailed, match="Step 'explode' raised ValueError"):
        from zserve.examples.failing import failing_pipeline

        await run(failing_pipeline, value=3)


@pytest.mark.anyio
async def test_timeout() -> None:
    from zserve.examples.slow import slow_pipeline

    plan = compile_plan(slow_pipeline)
    with pytest.raises(ExecutionTimeout, match=r"did not finish within 0\.05 s"):
        await execute(plan, {"delay": 5.0, "tag": "x"}, job_id="j", timeout_s=0.05)


@step
def who_am_i(tag: str) -> dict[str, Any]:
    ctx = get_context()
    return {"tag": tag, "job": ctx.job_id, "param": ctx.parameters["tag"]}


@step
async def echo_later(info: dict[str, Any], delay: float) -> dict[str, Any]:
    await asyncio.sleep(delay)
    ctx = get_context()
    return {**info, "job_after_sleep": ctx.job_id}


@pipeline
def isolation(tag: str, delay: float = 0.0) -> dict[str, Any]:
    return echo_later(who_am_i(tag), delay)


@pytest.mark.anyio
async def test_two_hundred_concurrent_runs_each_get_their_own_parameters_and_context() -> None:
    plan = compile_plan(isolation)

    async def one(i: int) -> dict[str, Any]:
        # interleave: later requests sleep less, so they overtake earlier ones
        params = plan.validate_parameters({"tag": f"t{i}", "delay": (200 - i) / 20000})
        return await execute(plan, params, job_id=f"job{i}")

    results = await asyncio.gather(*(one(i) for i in range(200)))
    for i, result in enumerate(results):
        assert result["output"] == {
            "tag": f"t{i}",
            "job": f"job{i}",
            "param": f"t{i}",
            "job_after_sleep": f"job{i}",
        }


def test_get_context_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="only available while a pipeline step runs"):
        get_context()


@pytest.mark.anyio
async def test_non_blocking_steps_stay_on_the_loop_and_async_steps_are_awaited() -> None:
    loop_threads: list[int] = []

    @step(blocking=False)
    def quick(x: int) -> int:
        loop_threads.append(threading.get_ident())
        return x + 1

    @step
    async def later(x: int) -> int:
        loop_threads.append(threading.get_ident())
        return x * 2

    @pipeline
    def mixed(x: int) -> int:
        return later(quick(x))

    plan = compile_plan(mixed)
    assert [s.where for s in plan.stages or []] == ["loop"]
    assert await run(mixed, x=1) == {"output": 4}
    assert len(set(loop_threads)) == 1


@step
def append(items: list[int], value: int) -> list[int]:
    items.append(value)
    return items


@pipeline
def with_list_constant(value: int) -> list[int]:
    return append([], value)


@pytest.mark.anyio
async def test_a_list_written_in_the_body_is_fresh_for_every_run() -> None:
    assert await run(with_list_constant, value=1) == {"output": [1]}
    assert await run(with_list_constant, value=2) == {"output": [2]}


@pytest.mark.anyio
async def test_after_a_timeout_no_further_sync_step_starts() -> None:
    import time

    ran: list[str] = []

    @step
    def first(x: int) -> int:
        ran.append("first")
        return x

    @step
    def slow(x: int) -> int:
        time.sleep(0.3)
        ran.append("slow")
        return x

    @step
    def charge_card(x: int) -> int:
        ran.append("charge_card")
        return x

    @pipeline
    def chain3(x: int) -> int:
        return charge_card(slow(first(x)))

    plan = compile_plan(chain3)
    assert [s.where for s in plan.stages or []] == ["thread"]
    with pytest.raises(ExecutionTimeout):
        await execute(plan, {"x": 1}, job_id="j", timeout_s=0.1)
    await asyncio.sleep(0.5)  # the running step finishes in its thread; nothing after it may start
    assert ran == ["first", "slow"]


@pytest.mark.anyio
async def test_a_step_calling_sys_exit_is_a_step_failure() -> None:
    import sys

    @step
    def quits(x: int) -> int:
        sys.exit(4)

    @pipeline
    def p(x: int) -> int:
        return quits(x)

    with pytest.raises(StepFailed, match="Step 'quits' raised SystemExit: 4"):
        await run(p, x=1)


@pytest.mark.anyio
async def test_an_implicit_tuple_of_the_wrong_length_fails_its_step() -> None:
    @pipeline
    def pair(x: int) -> tuple[int, int]:
        return (x, x, x)  # type: ignore[return-value]

    with pytest.raises(StepFailed, match=r"Step 'pair' .* returned 3 values, expected 2") as info:
        await run(pair, x=1)
    assert info.value.step == "pair"


@pytest.mark.anyio
async def test_a_pipeline_calling_another_pipeline_inlines_its_steps() -> None:
    @pipeline
    def inner(city: str) -> str:
        return analyze(fetch(city), 2)

    @pipeline
    def outer(city: str) -> str:
        return inner(city)

    assert [n.id for n in outer.graph.nodes] == ["fetch", "analyze"]
    assert await run(outer, city="Bern") == {"output": "Bern:2"}


STEPS = {"fetch": fetch}


@pipeline
def via_dict(city: str) -> dict[str, Any]:
    return STEPS["fetch"](city)  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_steps_reached_through_a_dict_are_traced() -> None:
    assert [n.id for n in via_dict.graph.nodes] == ["fetch"]
    assert await run(via_dict, city="Graz") == {"output": {"city": "Graz", "temp": 25}}
