"""The simple parameter schema of a pipeline, from its signature (stdlib only).

``{"city": {"type": "str", "required": true}, "days": {"type": "int", "required": false,
"default": 1}}``. The full JSON Schema is built by the engine from the same signature.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from zserve.sdk.pipeline import Pipeline

__all__ = ["parameter_schema", "type_name"]


def type_name(annotation: Any) -> str:
    """``int`` -> "int", ``list[str]`` -> "list[str]", no annotation -> "any"."""
    if annotation is inspect.Parameter.empty or annotation is typing.Any:
        return "any"
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = repr(annotation)
    return text.replace("typing.", "").replace("builtins.", "")


def parameter_schema(pipe: Pipeline) -> dict[str, dict[str, Any]]:
    hints = pipe.annotations()
    schema: dict[str, dict[str, Any]] = {}
    for name, param in pipe.request_parameters.items():
        entry: dict[str, Any] = {
            "type": type_name(hints.get(name, param.annotation)),
            "required": param.default is inspect.Parameter.empty,
        }
        if param.default is not inspect.Parameter.empty:
            entry["default"] = param.default
        schema[name] = entry
    return schema
