"""Adaptive placement of plain ``@step`` sync steps: in a worker thread until their runs show
they are short, then on the event loop, and back to threads for good after one long run there.
Never for ``blocking=True``, for fan-out plans, or with placement off."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from zserve import pipeline, step
from zserve.engine.placement import LONG_S, PROMOTE_AFTER
from zserve.engine.plan import Plan, compile_plan
from zserve.engine.runner import execute

pytestmark = pytest.mark.anyio
SEEN: list[str] = []


def where() -> str:
    name = "loop" if threading.current_thread() is threading.main_thread() else "thread"
    SEEN.append(name)
    return name


@step
def first(pause: float) -> float:
    where()
    if pause:
        time.sleep(pause)
    return pause


@step
def second(pause: float) -> str:
    return where()


@pipeline
def plain(pause: float = 0.0) -> str:
    return second(first(pause))


@step(blocking=True)
def said_blocking(x: int) -> str:
    return where()


@pipeline
def declared(x: int = 0) -> str:
    return said_blocking(x)


@step
def left(x: int) -> str:
    return where()


@step
def right(x: int) -> str:
    return where()


@pipeline
def fanout(x: int = 0) -> dict[str, Any]:
    return {"a": left(x), "b": right(x)}


async def places(plan: Plan, runs: int, **params: Any) -> list[str]:
    found = []
    for _ in range(runs):
        SEEN.clear()
        await execute(plan, plan.validate_parameters(params), job_id="j")
        found.append("+".join(SEEN))
    return found


async def test_short_plain_steps_move_to_the_loop_and_a_long_run_sends_them_back() -> None:
    plan = compile_plan(plain)
    assert [s.placement is not None for s in plan.stages or []] == [True]
    before = await places(plan, PROMOTE_AFTER)
    assert before == ["thread+thread"] * PROMOTE_AFTER
    assert await places(plan, 3) == ["loop+loop"] * 3  # shown short: no thread hop
    # one long run on the loop (the one that shows it is long), then threads for good
    assert await places(plan, 1, pause=LONG_S * 2) == ["loop+loop"]
    assert await places(plan, PROMOTE_AFTER + 5) == ["thread+thread"] * (PROMOTE_AFTER + 5)


async def test_a_long_run_in_a_thread_restarts_the_count() -> None:
    plan = compile_plan(plain)
    await places(plan, PROMOTE_AFTER - 1)
    await places(plan, 1, pause=0.002)  # long: the count starts again
    assert await places(plan, PROMOTE_AFTER - 1) == ["thread+thread"] * (PROMOTE_AFTER - 1)
    assert await places(plan, 2) == ["thread+thread", "loop+loop"]


async def test_declared_blocking_fan_out_and_placement_off_stay_in_threads() -> None:
    said = compile_plan(declared)
    assert await places(said, PROMOTE_AFTER + 3) == ["thread"] * (PROMOTE_AFTER + 3)
    spread = compile_plan(fanout)
    assert spread.stages is None  # parallel branches: each step hops on its own
    assert set(await places(spread, PROMOTE_AFTER + 3)) == {"thread+thread"}
    off = compile_plan(plain)
    off.adaptive = False
    assert await places(off, PROMOTE_AFTER + 3) == ["thread+thread"] * (PROMOTE_AFTER + 3)
