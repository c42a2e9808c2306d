"""A pipeline that takes ``delay`` seconds: for timeouts, concurrency and load tests."""

import asyncio
from typing import Any

from zserve import pipeline, step


@step
async def wait(delay: float, tag: str) -> str:
    await asyncio.sleep(delay)
    return tag


@pipeline
def slow_pipeline(delay: float = 1.0, tag: str = "done") -> dict[str, Any]:
    return {"tag": wait(delay, tag)}
