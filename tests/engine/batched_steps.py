"""What the engine's batching tests share: a batched step that records its calls, and a way
to run many executions of a plan at once."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from zserve import pipeline, step
from zserve.engine.plan import Plan
from zserve.engine.runner import execute

DEADLINE_S = 10.0
#: (batch sizes, thread names) of the calls of each batched function, as they are made
calls: dict[str, list[tuple[int, str]]] = {}


def called(name: str, size: int) -> None:
    calls.setdefault(name, []).append((size, threading.current_thread().name))


@step(batch=8)
def double(x: list[int]) -> list[Any]:
    called("double", len(x))
    return [ValueError(f"odd item {v}") if v == 13 else v * 2 for v in x]


@pipeline
def doubling(x: int) -> int:
    return double(x)


async def run_all(plan: Plan, values: list[dict[str, Any]], **kw: Any) -> list[Any]:
    runs = [execute(plan, v, job_id=f"job-{i}", **kw) for i, v in enumerate(values)]
    return await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), DEADLINE_S)
