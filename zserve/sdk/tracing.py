"""Trace a pipeline body once, with placeholders, into a graph of step calls.

The body runs a single time at compile time. Its parameters are ``Param`` placeholders and every
step call returns a ``StepOutput`` placeholder; a placeholder refuses every operation that would
need a real value (``if x``, ``for``, f-strings, arithmetic, attribute access...) with an error
naming the line, because such logic belongs inside a step.

One exception: the output of a step annotated ``-> tuple[A, B]`` (a fixed-length tuple) may be
unpacked (``a, b = split(x)``) or indexed (``split(x)[0]``); each item is a placeholder that
``Ref.index`` locates, and the node's ``arity`` has the run check the step's return value.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any, Protocol

from zserve.errors import PipelineDefinitionError
from zserve.sdk.resources import resource_default
from zserve.sdk.unpacking import step_arity, unpack_target

__all__ = [
    "Const",
    "Graph",
    "Node",
    "Param",
    "Ref",
    "StepOutput",
    "TracedStep",
    "current_tracer",
    "trace",
]


class TracedStep(Protocol):
    """What tracing and compiling need of a step (``zserve.sdk.step.Step`` is one)."""

    fn: Callable[..., Any]
    name: str
    signature: inspect.Signature
    is_async: bool
    is_generator: bool
    blocking: bool
    adaptive: bool
    #: a batched step: the most calls in one batch (None: not batched), and the longest wait
    batch: int | None
    batch_wait_ms: float
    #: capture settings, checked (``zserve.sdk.capture``)
    settings: dict[str, Any]


_tracer: ContextVar[Tracer | None] = ContextVar("zserve_tracer", default=None)


def current_tracer() -> Tracer | None:
    return _tracer.get()


@dataclass(frozen=True)
class Const:
    """A literal value written in the pipeline body."""

    value: Any


class Placeholder:
    """A value that only exists at run time. Every operation on it is a definition error."""

    __slots__ = ("_tracer",)

    def __init__(self, tracer: Tracer) -> None:
        object.__setattr__(self, "_tracer", tracer)

    def _describe(self) -> str:
        raise NotImplementedError

    def _refuse(self, what: str) -> Any:
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        raise PipelineDefinitionError(
            f"{tracer.where()}: {what} {self._describe()} in the pipeline body; its value only "
            "exists at run time. Move this into a step."
        )

    def __bool__(self) -> bool:
        return bool(self._refuse("cannot test the truth of"))

    def __iter__(self) -> Any:
        return self._refuse("cannot iterate over or unpack")

    def __format__(self, spec: str) -> str:
        return str(self._refuse("cannot format"))

    def __str__(self) -> str:
        return str(self._refuse("cannot convert to str"))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._refuse(f"cannot read attribute .{name} of")

    def __getitem__(self, key: Any) -> Any:
        return self._refuse("cannot index")

    def __len__(self) -> int:
        return int(self._refuse("cannot take the len() of"))

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return bool(self._refuse("cannot compare"))

    def __ne__(self, other: object) -> bool:
        return bool(self._refuse("cannot compare"))


def _operator(symbol: str) -> Callable[..., Any]:
    def op(self: Placeholder, *args: Any) -> Any:
        return self._refuse(f"cannot apply '{symbol}' to")

    return op


for _name, _symbol in {
    "add": "+", "sub": "-", "mul": "*", "matmul": "@", "truediv": "/", "floordiv": "//",
    "mod": "%", "pow": "**", "and": "&", "or": "|", "xor": "^", "lshift": "<<", "rshift": ">>",
}.items():  # fmt: skip
    for _prefix in ("", "r", "i"):
        setattr(Placeholder, f"__{_prefix}{_name}__", _operator(_symbol))
_UNARY_AND_COMPARE = {
    "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "neg": "-", "pos": "+",
    "abs": "abs()", "invert": "~", "contains": "in", "call": "()",
}  # fmt: skip
for _name, _symbol in _UNARY_AND_COMPARE.items():
    setattr(Placeholder, f"__{_name}__", _operator(_symbol))


class Param(Placeholder):
    __slots__ = ("name",)

    def __init__(self, tracer: Tracer, name: str) -> None:
        super().__init__(tracer)
        object.__setattr__(self, "name", name)

    def _describe(self) -> str:
        return f"parameter '{self.name}'"


class StepOutput(Placeholder):
    """A step's output, or (``index`` set) one item of a step's fixed-length tuple output."""

    __slots__ = ("index", "node")

    def __init__(self, tracer: Tracer, node: str, index: int | None = None) -> None:
        super().__init__(tracer)
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "index", index)

    def _describe(self) -> str:
        if self.index is not None:
            return f"item {self.index} of the output of step '{self.node}'"
        return f"the output of step '{self.node}'"

    def __iter__(self) -> Any:
        """``a, b = split(x)``: one placeholder per item of a ``-> tuple[A, B]`` output."""
        if self.index is not None:
            return self._refuse("cannot iterate over or unpack")
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        count = tracer.arity(self.node, "unpack")
        tracer.check_unpack(self.node, count, sys._getframe(1))
        return iter([StepOutput(tracer, self.node, i) for i in range(count)])

    def __getitem__(self, key: Any) -> Any:
        """``split(x)[0]``: one item of a ``-> tuple[A, B]`` output."""
        if self.index is not None:
            return self._refuse("cannot index")
        tracer: Tracer = object.__getattribute__(self, "_tracer")
        count = tracer.arity(self.node, "index")
        if isinstance(key, bool) or not isinstance(key, int) or not -count <= key < count:
            given = key._describe() if isinstance(key, Placeholder) else repr(key)
            raise PipelineDefinitionError(
                f"{tracer.where()}: step '{self.node}' returns {count} values; index its output "
                f"with a number from 0 to {count - 1} (or -{count} to -1), not {given}"
            )
        return StepOutput(tracer, self.node, key % count)


@dataclass(frozen=True)
class Ref:
    """Where a value comes from at run time: a parameter, a step output, or a constant."""

    kind: str  # "param" | "step" | "const" | "resource"
    name: str = ""  # parameter name, node id or resource name
    value: Any = None  # for "const"; for "resource", its ``ResourceSpec``
    #: For a step output that is a tuple: which item.
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "resource":
            return {"kind": "resource", "name": self.name}
        if self.kind == "const":
            return {"kind": "const", "value": self.value}
        if self.index is not None:
            return {"kind": self.kind, "name": self.name, "index": self.index}
        return {"kind": self.kind, "name": self.name}


@dataclass
class Node:
    """One step call in the graph."""

    id: str
    step: TracedStep
    inputs: dict[str, Ref]
    #: how many values the step returns, when the body takes its output apart (a step annotated
    #: ``-> tuple[A, B]``, unpacked or indexed) or it is the implicit step of a tuple[...]
    #: pipeline; the run fails the step when it returns another number of values
    arity: int | None = None

    @property
    def upstream(self) -> list[str]:
        return sorted({r.name for r in self.inputs.values() if r.kind == "step"})


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    #: output name -> where it comes from
    outputs: dict[str, Ref] = field(default_factory=dict)


class Tracer:
    def __init__(self, pipeline_name: str, code: CodeType) -> None:
        self.pipeline_name = pipeline_name
        self.code = code
        self.graph = Graph()

    def where(self) -> str:
        """``file:line`` of the pipeline body line being traced."""
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code is self.code:
                where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
                return f"{where} in pipeline '{self.pipeline_name}'"
            frame = frame.f_back  # type: ignore[assignment]
        return f"pipeline '{self.pipeline_name}'"

    def ref(self, value: Any, what: str) -> Ref:
        if isinstance(value, Param):
            return Ref("param", value.name)
        if isinstance(value, StepOutput):
            return Ref("step", value.node, index=value.index)
        if _contains_placeholder(value):
            raise PipelineDefinitionError(
                f"{self.where()}: {what} puts a run-time value inside a "
                f"{type(value).__name__}; pass it to the step directly, or build the "
                "container inside a step."
            )
        return Ref("const", value=value)

    def record(self, step: TracedStep, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StepOutput:
        try:
            bound = step.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PipelineDefinitionError(
                f"{self.where()}: step '{step.name}' called with the wrong arguments: {exc}"
            ) from None
        used = {node.id for node in self.graph.nodes}
        node_id, count = step.name, 1
        while node_id in used:  # the same step called again: name_2, name_3, ...
            count += 1
            node_id = f"{step.name}_{count}"
        inputs: dict[str, Ref] = {}
        for pname, param in step.signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise PipelineDefinitionError(
                    f"step '{step.name}': parameter '{pname}' must be an ordinary named "
                    "parameter (no *args, **kwargs or positional-only)"
                )
            resource = resource_default(param)
            if resource is not None:
                if pname in bound.arguments:
                    raise PipelineDefinitionError(
                        f"{self.where()}: step '{step.name}' is passed its resource parameter "
                        f"'{pname}'; resources are injected, not passed: leave it out of the call"
                    )
                inputs[pname] = Ref("resource", resource.name, value=resource)
            elif pname in bound.arguments:
                inputs[pname] = self.ref(bound.arguments[pname], f"argument '{pname}'")
        self.graph.nodes.append(Node(node_id, step, inputs))
        return StepOutput(self, node_id)

    def arity(self, node_id: str, verb: str) -> int:
        """How many values step ``node_id`` returns (its return annotation), kept on its node
        so that the run checks it; unknown, a definition error saying how to annotate it."""
        node = next(n for n in self.graph.nodes if n.id == node_id)
        if node.arity is None:
            count = step_arity(node.step.fn, node.step.is_generator, node.step.batch is not None)
            if isinstance(count, str):
                raise PipelineDefinitionError(
                    f"{self.where()}: cannot {verb} the output of step '{node.step.name}': "
                    f"{count}. Annotate the step '-> tuple[A, B]' (one type per value) to take "
                    "its output apart in the body, or pass the whole output to a step."
                )
            node.arity = count
        return node.arity

    def check_unpack(self, node_id: str, count: int, frame: FrameType) -> None:
        """``a, b, c = split(x)`` with a two-value ``split``: said now, naming the step
        (``frame`` is the one unpacking)."""
        target = unpack_target(frame)
        if target is not None and (target[0] > count or (target[0] < count and not target[1])):
            raise PipelineDefinitionError(
                f"{self.where()}: step '{node_id}' returns {count} values (its return "
                f"annotation) but the body unpacks its output into {target[0]} names; unpack it "
                f"into {count}, or change the step's annotation"
            )


def trace(pipeline_name: str, fn: Callable[..., Any], params: list[str]) -> Graph:
    """Run ``fn`` once with placeholders and return the graph of its step calls."""
    tracer = Tracer(pipeline_name, fn.__code__)
    token = _tracer.set(tracer)
    try:
        placeholders = {name: Param(tracer, name) for name in params}
        if inspect.iscoroutinefunction(fn):
            raise PipelineDefinitionError(
                f"pipeline '{pipeline_name}' is 'async def': a pipeline body only wires steps "
                "together; make it a plain 'def' (its steps can be async)"
            )
        result = fn(**placeholders)
    finally:
        _tracer.reset(token)
    graph = tracer.graph
    graph.outputs = _name_outputs(tracer, result)
    return graph


def _name_outputs(tracer: Tracer, result: Any) -> dict[str, Ref]:
    if result is None:
        return {}
    if isinstance(result, tuple):
        return {f"output_{i}": tracer.ref(v, f"output {i}") for i, v in enumerate(result)}
    if isinstance(result, dict) and result and all(isinstance(k, str) for k in result):
        return {k: tracer.ref(v, f"output '{k}'") for k, v in result.items()}
    return {"output": tracer.ref(result, "the return value")}


def _contains_placeholder(value: Any) -> bool:
    if isinstance(value, Placeholder):
        return True
    if isinstance(value, dict):
        return any(_contains_placeholder(v) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_contains_placeholder(v) for v in value)
    return False
