"""Token streaming, LLM-style: a generator step yields words one by one (each one is a
``step.chunk`` event for whoever follows the job), then a step reports its progress with
``get_context().emit``."""

import asyncio
from collections.abc import AsyncIterator

from zserve import get_context, pipeline, step


@step
async def generate(prompt: str, words: int, delay: float) -> AsyncIterator[str]:
    for i in range(words):
        await asyncio.sleep(delay)
        yield f"{prompt}-{i}"


@step
async def summarize(tokens: list[str], delay: float) -> dict[str, object]:
    for done in range(1, 4):
        await asyncio.sleep(delay)
        get_context().emit({"done": done, "of": 3})
    return {"tokens": len(tokens), "text": " ".join(tokens)}


@pipeline
def streaming_pipeline(
    prompt: str = "word", words: int = 5, delay: float = 0.05
) -> dict[str, object]:
    return {"summary": summarize(generate(prompt, words, delay), delay)}
