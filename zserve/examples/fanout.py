"""Parallel branches: ``left`` and ``right`` only need the input, so they run at the same time
and the pipeline takes as long as the slower one; ``combine`` waits for both."""

import asyncio
import time
from typing import Any

from zserve import pipeline, step


@step
def prepare(n: int) -> int:
    return n


@step
def left(n: int, delay: float) -> int:
    time.sleep(delay)  # a blocking call: runs in a worker thread
    return n + 1


@step
async def right(n: int, delay: float) -> int:
    await asyncio.sleep(delay)
    return n * 10


@step
def combine(a: int, b: int) -> dict[str, Any]:
    return {"left": a, "right": b, "sum": a + b}


@pipeline
def fanout_pipeline(n: int = 1, delay: float = 0.2) -> dict[str, Any]:
    base = prepare(n)
    return {"result": combine(left(base, delay), right(base, delay))}
