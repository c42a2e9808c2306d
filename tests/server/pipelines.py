"""Pipelines used only by the server tests."""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Annotated

from pydantic import Field

from zserve import pipeline, step


class Opaque:
    pass


@pipeline
def returns_object() -> Opaque:
    return Opaque()


@pipeline
def not_a_number() -> dict[str, float]:
    return {"nan": float("nan"), "inf": float("inf"), "ok": 1.5}


@step
def sleep_blocking(seconds: float) -> float:
    time.sleep(seconds)  # a sync step: runs in a worker thread and cannot be interrupted
    return seconds


@pipeline
def blocking(seconds: float = 0.0) -> float:
    return sleep_blocking(seconds)


@step
def total(count: int, ratio: float, lenient: int) -> float:
    return count * ratio + lenient


@pipeline
def typed(
    count: Annotated[int, Field(ge=1, le=10)],
    ratio: float = 1.0,
    lenient: Annotated[int, Field(strict=False)] = 0,
) -> float:
    return total(count, ratio, lenient)


@step
async def gated_words(gate: str, words: int) -> AsyncIterator[str]:
    """Yields ``first`` at once, then ``words`` more once the file ``gate`` exists: a test
    sees what a stream sends while the job still runs, with no timing."""
    yield "first"
    while not os.path.exists(gate):
        await asyncio.sleep(0.01)
    for i in range(words):
        yield f"word-{i}"


@pipeline
def gated(gate: str, words: int = 2) -> list[str]:
    return gated_words(gate, words)
