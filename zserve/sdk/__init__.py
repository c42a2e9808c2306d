"""Authoring: @step, @pipeline, tracing into a graph, parameter schema, "module:attr" loader.
May import zserve.errors and zserve.settings and the standard library; nothing else."""

from zserve.sdk.pipeline import Pipeline, pipeline
from zserve.sdk.step import Step, step

__all__ = ["Pipeline", "Step", "pipeline", "step"]
