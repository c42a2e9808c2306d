"""The spec's multi-output pipeline: a body that calls no step is one implicit step, and a
``tuple[int, str]`` return is answered as ``output_0`` and ``output_1``."""

from zserve import pipeline


@pipeline
def multi_output_pipeline(x: int) -> tuple[int, str]:
    return x * 2, f"Result: {x}"


@pipeline(settings={"capture": "none"})
def fast_pipeline(x: int) -> int:
    return x * 2
