"""What taking a step's output apart in a pipeline body needs to know: how many values a step
returns (its return annotation) and how many names a line unpacks it into (its bytecode).

Only tracing (compile time) asks; a run pays nothing for it, except a check of the number of
values each such step returns (``zserve.engine.plan``).
"""

from __future__ import annotations

import collections.abc
import dis
import inspect
import typing
from collections.abc import Callable
from types import FrameType
from typing import Any

from zserve.sdk.capture import type_hints

__all__ = ["fixed_arity", "step_arity", "unpack_target"]


def fixed_arity(annotation: Any) -> int | None:
    """How many values a ``tuple[A, B, ...]`` annotation holds; None for anything else
    (``tuple[int, ...]``, ``list``, no annotation)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and args and ... not in args:
        return len(args)
    return None


def step_arity(fn: Callable[..., Any], is_generator: bool, batched: bool = False) -> int | str:
    """How many values a step returns, by its return annotation (``tuple[A, B]``, or a
    ``typing.NamedTuple`` class; for a batched step, the items of its ``list[...]``); when
    that is unknown, why, in words."""
    if is_generator:
        return "it is a generator step, whose output is the list of the items it yields"
    annotation = type_hints(fn, extras=False).get("return", inspect.Signature.empty)
    if batched:
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) not in (list, collections.abc.Sequence) or not args:
            return "it is a batched step whose return annotation is not list[tuple[A, B]]"
        annotation = args[0]
    if isinstance(annotation, type) and issubclass(annotation, tuple):
        fields = getattr(annotation, "_fields", None)
        if isinstance(fields, tuple) and fields:
            return len(fields)
    count = fixed_arity(annotation)
    if count is not None:
        return count
    if annotation is inspect.Signature.empty:
        return "its return type is not annotated"
    if isinstance(annotation, str):
        return (
            f"its return annotation {annotation!r} cannot be evaluated (define the names it uses "
            "at module level)"
        )
    plain = isinstance(annotation, type) and typing.get_origin(annotation) is None
    name = annotation.__name__ if plain else repr(annotation)
    return f"its return type {name.replace('typing.', '')} is not a fixed-length tuple"


def unpack_target(frame: FrameType) -> tuple[int, bool] | None:
    """When ``frame`` is unpacking a value (``a, b = ...`` or ``a, *rest = ...``): how many
    names, and whether one of them is starred; None when it is doing something else."""
    for ins in dis.get_instructions(frame.f_code):
        if ins.offset == frame.f_lasti:
            arg = ins.arg or 0
            if ins.opname == "UNPACK_SEQUENCE":
                return arg, False
            if ins.opname == "UNPACK_EX":
                return (arg & 0xFF) + (arg >> 8), True
            return None
    return None
