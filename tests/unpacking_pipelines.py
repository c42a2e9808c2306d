"""Example pipelines that take a step's several outputs apart in the body (README, "Pipelines"):
``word, count = split(text)``. Used by the SDK, engine and HTTP tests."""

from __future__ import annotations

from typing import NamedTuple

from zserve import pipeline, step


@step
def split(text: str) -> tuple[str, int]:
    """The first word of ``text``, and how many words follow it."""
    first, *rest = text.split()
    return first, len(rest)


@step
async def shout(word: str) -> str:
    return word.upper()


@step(blocking=False)
def repeat(word: str, times: int) -> str:
    return "-".join([word] * times)


@pipeline
def linear_unpacking(text: str) -> tuple[str, int]:
    """split, then shout, then repeat: one after the other (a linear plan)."""
    word, count = split(text)
    return repeat(shout(word), count), count


@pipeline
def graph_unpacking(text: str) -> dict[str, object]:
    """shout and repeat both wait for split only: they may run at the same time (a graph plan).
    ``parts[0]`` and ``parts[-1]`` are the same items as unpacking would give."""
    parts = split(text)
    return {"loud": shout(parts[0]), "echo": repeat(parts[0], parts[-1]), "parts": parts}


class Pair(NamedTuple):
    left: int
    right: int


@step
async def halves(n: int) -> Pair:
    return Pair(n // 2, n - n // 2)


@step
def product(a: int, b: int) -> int:
    return a * b


@pipeline
def named_tuple_unpacking(n: int) -> tuple[int, int, int]:
    """An async step returning a NamedTuple, unpacked."""
    left, right = halves(n)
    return left, right, product(left, right)


@step
def miscount(text: str) -> tuple[str, int]:
    """Annotated with two values, returns three: the run fails this step."""
    return text, 1, 2  # type: ignore[return-value]


@pipeline
def miscounting(text: str) -> tuple[str, int]:
    word, count = miscount(text)
    return word, count
