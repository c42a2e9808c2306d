"""``@pipeline``: a function whose body wires steps together, traced once into a graph."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, overload

from zserve.errors import PipelineDefinitionError
from zserve.records import CAPTURE_MODES
from zserve.sdk.capture import check_redact, type_hints
from zserve.sdk.resources import ResourceSpec, resource_default
from zserve.sdk.step import Step
from zserve.sdk.tracing import Graph, Node, Ref, TracedStep, trace
from zserve.sdk.unpacking import fixed_arity

__all__ = ["Pipeline", "pipeline"]

_KNOWN_SETTINGS = {"capture", "capture_flush", "redact"}
#: When a tracked run's record is written: before the response (``sync``), or after it.
CAPTURE_FLUSH = ("sync", "background")


class Pipeline:
    """A decorated pipeline. ``graph`` is traced on first use and kept."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.settings = dict(settings or {})
        unknown = set(self.settings) - _KNOWN_SETTINGS
        if unknown:
            raise PipelineDefinitionError(
                f"pipeline '{self.name}': unknown setting(s) {sorted(unknown)}; "
                f"known: {sorted(_KNOWN_SETTINGS)}"
            )
        capture = self.settings.get("capture", None)
        if capture is not None and capture not in CAPTURE_MODES:
            raise PipelineDefinitionError(
                f"pipeline '{self.name}': unknown capture mode {capture!r}; "
                f"use one of {', '.join(CAPTURE_MODES)}"
            )
        if self.settings.get("redact") is not None:
            check_redact(self.settings["redact"], f"pipeline '{self.name}'")
        flush = self.settings.get("capture_flush")
        if flush is not None and flush not in CAPTURE_FLUSH:
            raise PipelineDefinitionError(
                f"pipeline '{self.name}': unknown capture_flush {flush!r}; "
                f"use one of {', '.join(CAPTURE_FLUSH)}"
            )
        self.signature = inspect.signature(fn)
        for pname, param in self.signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise PipelineDefinitionError(
                    f"pipeline '{self.name}': parameter '{pname}' must be an ordinary named "
                    "parameter (no *args, **kwargs or positional-only)"
                )
        #: parameters that declare a resource (``Resource(factory)`` defaults): never request
        #: fields; only a pipeline whose body calls no step (it is its own step) may have them
        self.resources: dict[str, ResourceSpec] = {
            pname: spec
            for pname, param in self.signature.parameters.items()
            if (spec := resource_default(param)) is not None
        }
        self._graph: Graph | None = None
        functools.update_wrapper(self, fn)

    @property
    def capture(self) -> str | None:
        value = self.settings.get("capture")
        return None if value is None else str(value)

    @property
    def redact(self) -> tuple[str, ...] | None:
        """Key words whose values are stored as ``[REDACTED]`` (``settings["redact"]``)."""
        value = self.settings.get("redact")
        return None if value is None else tuple(value)

    @property
    def capture_flush(self) -> str | None:
        value = self.settings.get("capture_flush")
        return None if value is None else str(value)

    @property
    def parameter_names(self) -> list[str]:
        """The request's parameters: the signature's, resources left out."""
        return [p for p in self.signature.parameters if p not in self.resources]

    @property
    def request_parameters(self) -> dict[str, inspect.Parameter]:
        """The signature's parameters that are request fields (resources left out)."""
        params = self.signature.parameters
        return {p: params[p] for p in params if p not in self.resources}

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            self._graph = self._build_graph()
        return self._graph

    def annotations(self, *, extras: bool = False) -> dict[str, Any]:
        """Resolved type hints of the pipeline function (string annotations evaluated; one
        that cannot be is left as written), with ``Annotated`` metadata only when ``extras``."""
        return type_hints(self.fn, extras=extras)

    def steps(self) -> list[TracedStep]:
        return [node.step for node in self.graph.nodes]

    def _calls_steps(self) -> bool:
        """Does the body reference a step? Decided statically, before any tracing."""
        code = self.fn.__code__
        scope: dict[str, Any] = dict(self.fn.__globals__)
        if self.fn.__closure__:
            scope.update(
                zip(code.co_freevars, (c.cell_contents for c in self.fn.__closure__), strict=True)
            )
        names = set(code.co_names) | set(code.co_freevars)
        for name in names:
            value = scope.get(name)
            if _wires_steps(value):
                return True
            # module.step_name: any module attribute that is a step counts
            if inspect.ismodule(value) and any(
                _wires_steps(getattr(value, attr, None)) for attr in code.co_names
            ):
                return True
        return False

    def _build_graph(self) -> Graph:
        if not self._calls_steps():
            return self._implicit_graph()
        if self.resources:
            pname = next(iter(self.resources))
            raise PipelineDefinitionError(
                f"pipeline '{self.name}': parameter '{pname}' is a Resource, but this pipeline "
                "calls steps; declare the resource on the step that uses it "
                f"(def my_step(..., {pname}=Resource(...)))"
            )
        return trace(self.name, self.fn, self.parameter_names)

    def _implicit_graph(self) -> Graph:
        """A body that calls no step is itself the one step (the spec's ``return x * 2``)."""
        implicit: Step[..., Any] = Step(self.fn, name=self.name)
        inputs = {p: Ref("param", p) for p in self.parameter_names}
        inputs.update(
            {p: Ref("resource", spec.name, value=spec) for p, spec in self.resources.items()}
        )
        node = Node(self.name, implicit, inputs)
        hints = self.annotations()
        ret = hints.get("return", inspect.Signature.empty)
        count = fixed_arity(ret)
        outputs: dict[str, Ref]
        if ret is None or ret is type(None):
            outputs = {}
        elif count is not None:
            node.arity = count  # the run checks the number of values returned
            outputs = {f"output_{i}": Ref("step", self.name, index=i) for i in range(count)}
        else:
            outputs = {"output": Ref("step", self.name)}
        return Graph(nodes=[node], outputs=outputs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}>"


def _wires_steps(value: Any) -> bool:
    """A step, another pipeline (its steps are inlined), or a dict/list/tuple holding steps."""
    if isinstance(value, Step | Pipeline):
        return True
    if isinstance(value, dict):
        return any(isinstance(v, Step | Pipeline) for v in value.values())
    if isinstance(value, list | tuple):
        return any(isinstance(v, Step | Pipeline) for v in value)
    return False


@overload
def pipeline(fn: Callable[..., Any], /) -> Pipeline: ...
@overload
def pipeline(
    *, name: str | None = None, settings: dict[str, Any] | None = None
) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Pipeline | Callable[[Callable[..., Any]], Pipeline]:
    """Mark a function as a pipeline.

    ``@pipeline`` or ``@pipeline(name=..., settings={"capture": "none"})``.
    """
    if fn is not None:
        return Pipeline(fn, name=name, settings=settings)

    def decorate(f: Callable[..., Any]) -> Pipeline:
        return Pipeline(f, name=name, settings=settings)

    return decorate
