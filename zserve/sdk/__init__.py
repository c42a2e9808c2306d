"""Authoring: @step, @pipeline, tracing into a graph, parameter schema, "module:attr" loader.
May import the bottom modules (errors, records, settings) and the standard library; nothing else
(docs/architecture.md, Layers)."""

from zserve.sdk.capture import Capture
from zserve.sdk.pipeline import Pipeline, pipeline
from zserve.sdk.step import Step, step

__all__ = ["Capture", "Pipeline", "Step", "pipeline", "step"]
