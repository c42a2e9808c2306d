"""A pipeline whose second step raises, to show how failures are reported."""

from zserve import pipeline, step


@step
def load(value: int) -> int:
    return value


@step
def explode(value: int) -> int:
    raise ValueError(f"cannot process value {value}")


@pipeline
def failing_pipeline(value: int = 1) -> int:
    return explode(load(value))
