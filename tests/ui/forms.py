"""A pipeline whose parameters take every kind of form field the Try it page makes: a required
string, an enum, a float, an optional integer, a boolean, and a list (a JSON textarea)."""

from __future__ import annotations

from typing import Literal

from zserve import pipeline, step


@step
def describe(
    name: str, unit: str, ratio: float, limit: int | None, loud: bool, tags: list[str]
) -> dict[str, object]:
    text = f"{name} in {unit} x{ratio} limit={limit} tags={','.join(tags)}"
    return {"text": text.upper() if loud else text, "tags": tags, "limit": limit}


@pipeline
def form_pipeline(
    name: str,
    unit: Literal["celsius", "fahrenheit"] = "celsius",
    ratio: float = 0.5,
    limit: int | None = None,
    loud: bool = False,
    tags: list[str] = ["a"],  # noqa: B006 (a default the schema shows)
) -> dict[str, object]:
    return describe(name, unit, ratio, limit, loud, tags)
