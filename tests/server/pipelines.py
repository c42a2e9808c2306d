"""Pipelines used only by the server tests."""

from zserve import pipeline


class Opaque:
    pass


@pipeline
def returns_object() -> Opaque:
    return Opaque()
