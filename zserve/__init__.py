"""zserve: serve Python pipelines over HTTP with millisecond-class latency.

The public API is small and pinned by ``tests/test_exported_members.py``. Exports are loaded
lazily (PEP 562), so ``import zserve`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zserve._version import __version__

if TYPE_CHECKING:
    from zserve import errors
    from zserve.engine.context import RunContext, get_context
    from zserve.sdk.capture import Capture
    from zserve.sdk.materializers import register_materializer
    from zserve.sdk.pipeline import Pipeline, pipeline
    from zserve.sdk.resources import Resource
    from zserve.sdk.step import Step, step

__all__ = [
    "Capture",
    "Pipeline",
    "Resource",
    "RunContext",
    "Step",
    "__version__",
    "errors",
    "get_context",
    "pipeline",
    "register_materializer",
    "step",
]

_LAZY = {
    "Capture": "zserve.sdk.capture",
    "step": "zserve.sdk.step",
    "Step": "zserve.sdk.step",
    "pipeline": "zserve.sdk.pipeline",
    "Pipeline": "zserve.sdk.pipeline",
    "Resource": "zserve.sdk.resources",
    "get_context": "zserve.engine.context",
    "RunContext": "zserve.engine.context",
    "register_materializer": "zserve.sdk.materializers",
}


def __getattr__(name: str) -> Any:
    if name == "errors":
        return importlib.import_module("zserve.errors")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
