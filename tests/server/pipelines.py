"""Pipelines used only by the server tests."""

from zserve import pipeline


class Opaque:
    pass


@pipeline
def returns_object() -> Opaque:
    return Opaque()


@pipeline
def not_a_number() -> dict[str, float]:
    return {"nan": float("nan"), "inf": float("inf"), "ok": 1.5}
