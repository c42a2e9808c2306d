"""Compile a pipeline once into a ``Plan``: the order of its steps, how each step's arguments
are bound, how its work is grouped onto the event loop and worker threads, and the pydantic
models that validate a request."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)

from zserve.engine.placement import Placement
from zserve.engine.policies import StepPolicy, compile_policies, describe_policy
from zserve.engine.resources import ResourceSlot, resource_slots
from zserve.engine.values import jsonable
from zserve.errors import InvalidParameters, PipelineDefinitionError, UsageError, describe_fields
from zserve.records import CaptureMode
from zserve.sdk.pipeline import Pipeline
from zserve.sdk.schema import parameter_schema
from zserve.sdk.tracing import Node, Ref

__all__ = [
    "CaptureOverride",
    "CompiledStep",
    "InvokeRequest",
    "Plan",
    "Stage",
    "compile_plan",
]

#: Reads one argument's value from (parameters, step results).
Getter = Callable[[dict[str, Any], dict[str, Any]], Any]


class CaptureOverride(BaseModel):
    # the schema says what the validator below checks: sample_rate goes with mode sampled only
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "if": {"properties": {"mode": {"not": {"const": "sampled"}}}},
            "then": {"properties": {"sample_rate": {"type": "null"}}},
        },
    )

    mode: CaptureMode
    sample_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _rate_for_sampled(self) -> CaptureOverride:
        if self.sample_rate is not None and self.mode != "sampled":
            raise ValueError(f"sample_rate applies to mode 'sampled' only, not {self.mode!r}")
        return self


class InvokeRequest(BaseModel):
    """The body of ``POST /invoke``. Each plan subclasses it with its own ``parameters``
    model, so one pass of pydantic-core validates the whole request."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    parameters: BaseModel
    capture_override: CaptureOverride | None = None
    timeout_s: float | None = Field(default=None, gt=0)


def _getter(ref: Ref, slots: dict[str, ResourceSlot] | None = None) -> Getter:
    if ref.kind == "resource":
        assert slots is not None
        slot = slots[ref.name]
        return lambda params, results: slot.value
    if ref.kind == "param":
        key = ref.name
        return lambda params, results: params[key]
    if ref.kind == "step":
        key, index = ref.name, ref.index
        if index is None:
            return lambda params, results: results[key]
        return lambda params, results: results[key][index]
    value = ref.value
    if _immutable(value):
        return lambda params, results: value
    # A list or dict written in the body: every run gets its own copy.
    return lambda params, results: copy.deepcopy(value)


def _immutable(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_immutable(v) for v in value)
    return False


@dataclass
class CompiledStep:
    id: str
    name: str
    fn: Callable[..., Any]
    is_async: bool
    is_generator: bool
    #: a sync step that may block: runs in a worker thread
    blocking: bool
    #: a plain ``@step`` (blocking not said): its thread stage may move to the loop
    adaptive: bool
    args: list[tuple[str, Getter]]
    upstream: list[str]

    def kwargs(self, params: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
        return {name: get(params, results) for name, get in self.args}


@dataclass
class Stage:
    """A run of consecutive steps of a linear plan that share one way of running.

    ``"thread"``: consecutive blocking sync steps, run one after the other in one thread hop.
    ``"loop"``: async steps and non-blocking sync steps, run on the event loop.
    """

    where: Literal["thread", "loop"]
    steps: list[CompiledStep]
    #: a thread stage of plain ``@step`` sync steps: may move to the loop (engine/placement.py)
    placement: Placement | None = None


@dataclass
class Plan:
    pipeline: Pipeline
    name: str
    steps: list[CompiledStep]
    outputs: list[tuple[str, Getter]]
    output_refs: dict[str, Ref]
    #: Linear plans run as straight-line code; others schedule each step when its inputs are ready.
    stages: list[Stage] | None
    dependents: dict[str, list[str]]
    parameters_model: type[BaseModel]
    request_model: type[InvokeRequest]
    defaults: dict[str, Any]
    schema: dict[str, dict[str, Any]]
    spec: dict[str, Any] = field(default_factory=dict)
    #: capture policies (engine/policies.py): step id -> policy, only steps that set one
    policies: dict[str, StepPolicy] = field(default_factory=dict)
    #: pipeline parameters never stored with a run (a ``none`` floor on them or where they go)
    private_parameters: frozenset[str] = frozenset()
    #: step ids whose output is never stored
    private_outputs: frozenset[str] = frozenset()
    #: the pipeline's redaction patterns (``settings["redact"]``)
    redact: tuple[str, ...] | None = None
    #: the pipeline's ``settings["capture_flush"]``: "sync", "background" or unset
    capture_flush: str | None = None
    #: whether thread stages of plain ``@step`` steps may move to the loop
    #: (``ZSERVE_ADAPTIVE_STEPS``; engine/placement.py)
    adaptive: bool = True
    #: the resources its steps ask for, by name, in the order they are first asked for: one
    #: slot each, filled by ``zserve.engine.worker.Worker``
    resources: dict[str, ResourceSlot] = field(default_factory=dict)

    @property
    def linear(self) -> bool:
        return self.stages is not None

    def validate_parameters(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate a parameters dict; raises InvalidParameters naming every bad field."""
        try:
            return dict(self.parameters_model.model_validate(values))
        except ValidationError as exc:
            raise InvalidParameters.from_field_errors(exc.errors(), prefix=["parameters"]) from None

    def parse_request(self, body: bytes | str) -> InvokeRequest:
        """Validate an invoke body (JSON) in one pass. Raises UsageError for a body that is not
        a JSON object, InvalidParameters naming every bad field otherwise."""
        try:
            return self.request_model.model_validate_json(body)
        except ValidationError as exc:
            raise _request_error(exc) from None


def _request_error(exc: ValidationError) -> UsageError:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return UsageError(
            "The request body is not valid JSON: send an object such as "
            '{"parameters": {...}} with Content-Type: application/json'
        )
    if any(e["type"] in ("model_type", "model_attributes_type") and not e["loc"] for e in errors):
        return UsageError('The request body must be a JSON object: {"parameters": {...}}')
    invalid = InvalidParameters.from_field_errors(errors)
    fields = {str(e["loc"][0]) for e in invalid.errors if e["loc"]}
    if "parameters" not in fields and len(fields) == 1:  # capture_override, timeout_s...
        return InvalidParameters(
            invalid.errors, f"Invalid {fields.pop()}: " + describe_fields(invalid.errors)
        )
    return invalid


#: Parameters are validated as the published schema says: no "3" or true for an int, no 3.0 for
#: an int, no NaN or infinities. ``Annotated[int, Field(strict=False)]`` relaxes one parameter.
PARAMETERS_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _build_models(pipe: Pipeline) -> tuple[type[BaseModel], type[InvokeRequest], dict[str, Any]]:
    hints = pipe.annotations(extras=True)  # Field(...) constraints and settings count
    fields: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    request_parameters = pipe.request_parameters
    for name, param in request_parameters.items():
        annotation = hints.get(name, Any)
        _check_parameter(pipe.name, name, annotation)
        if param.default is inspect.Parameter.empty:
            fields[name] = (annotation, ...)
        else:
            fields[name] = (annotation, param.default)
            defaults[name] = param.default
    model_name = "".join(p.title() for p in pipe.name.split("_")) + "Parameters"
    params_model: type[BaseModel] = create_model(model_name, __config__=PARAMETERS_CONFIG, **fields)
    required = any(p.default is inspect.Parameter.empty for p in request_parameters.values())
    parameters_field: Any = (
        (params_model, ...) if required else (params_model, Field(default_factory=params_model))
    )
    request_model = create_model(
        "InvokeRequest", __base__=InvokeRequest, parameters=parameters_field
    )
    return params_model, request_model, defaults


def _check_parameter(pipeline: str, name: str, annotation: Any) -> None:
    """A parameter must be a request field: a plain name and a type pydantic reads from JSON."""
    if name.startswith(("_", "model_")):
        raise PipelineDefinitionError(
            f"pipeline '{pipeline}': parameter '{name}' cannot be a request field (names "
            "starting with '_' or 'model_' are reserved by pydantic); rename it"
        )
    try:
        TypeAdapter(annotation).json_schema()
    except Exception as exc:
        kind = getattr(annotation, "__name__", repr(annotation))
        raise PipelineDefinitionError(
            f"pipeline '{pipeline}': parameter '{name}' has type {kind}, which cannot be read "
            "from a JSON request; use JSON-friendly types (str, int, float, bool, list, dict, "
            f"pydantic models, dataclasses) ({type(exc).__name__})"
        ) from None


def _compile_step(node: Node, slots: dict[str, ResourceSlot]) -> CompiledStep:
    step = node.step
    fn = step.fn
    if node.arity is not None and not step.is_generator:
        fn = _returning(fn, node.arity, step.is_async)
    return CompiledStep(
        id=node.id,
        name=step.name,
        fn=fn,
        is_async=step.is_async,
        is_generator=step.is_generator,
        blocking=step.blocking,
        adaptive=step.adaptive,
        args=[(arg, _getter(ref, slots)) for arg, ref in node.inputs.items()],
        upstream=node.upstream,
    )


def _returning(fn: Callable[..., Any], count: int, is_async: bool) -> Callable[..., Any]:
    """``fn``, failing when it returns other than ``count`` values: a step whose output the
    pipeline takes apart (``a, b = split(x)``). Only such steps pay for the check."""

    def check(value: Any) -> Any:
        if isinstance(value, tuple | list) and len(value) == count:
            return value
        got = f"{len(value)} values" if isinstance(value, tuple | list) else type(value).__name__
        raise ValueError(
            f"returned {got}, expected {count} (its return annotation is a {count}-tuple, "
            f"which the pipeline takes apart); return exactly {count} values, or change the "
            "annotation"
        )

    if is_async:

        async def returning_async(**kwargs: Any) -> Any:
            return check(await fn(**kwargs))

        return functools.update_wrapper(returning_async, fn)

    def returning(**kwargs: Any) -> Any:
        return check(fn(**kwargs))

    return functools.update_wrapper(returning, fn)


def _stages(steps: list[CompiledStep]) -> list[Stage] | None:
    """Group a linear plan into stages; None when some steps could run concurrently."""
    ancestors: dict[str, set[str]] = {}
    for i, s in enumerate(steps):
        ancestors[s.id] = set(s.upstream).union(*(ancestors[u] for u in s.upstream))
        if i > 0 and steps[i - 1].id not in ancestors[s.id]:
            return None
    stages: list[Stage] = []
    for s in steps:
        where: Literal["thread", "loop"] = "thread" if s.blocking else "loop"
        if stages and stages[-1].where == where:
            stages[-1].steps.append(s)
        else:
            stages.append(Stage(where, [s]))
    for stage in stages:
        if stage.where == "thread" and all(s.adaptive for s in stage.steps):
            stage.placement = Placement()
    return stages


def compile_plan(pipe: Pipeline) -> Plan:
    """Trace (once) and compile ``pipe``. Raises PipelineDefinitionError for a bad body."""
    graph = pipe.graph
    slots = resource_slots(graph.nodes)
    steps = [_compile_step(n, slots) for n in graph.nodes]
    dependents: dict[str, list[str]] = {s.id: [] for s in steps}
    for s in steps:
        for u in s.upstream:
            dependents[u].append(s.id)
    params_model, request_model, defaults = _build_models(pipe)
    schema = parameter_schema(pipe)
    policies = compile_policies(pipe, graph)
    plan = Plan(
        pipeline=pipe,
        name=pipe.name,
        steps=steps,
        outputs=[(name, _getter(ref)) for name, ref in graph.outputs.items()],
        output_refs=dict(graph.outputs),
        stages=_stages(steps),
        dependents=dependents,
        parameters_model=params_model,
        request_model=request_model,
        defaults=defaults,
        schema=schema,
        policies=policies.steps,
        private_parameters=policies.private_parameters,
        private_outputs=policies.private_outputs,
        redact=policies.redact,
        capture_flush=policies.capture_flush,
        resources=slots,
    )
    plan.spec = describe(plan)
    for entry in plan.spec["steps"]:
        if entry["name"] in plan.policies:
            entry["capture_policy"] = describe_policy(plan.policies[entry["name"]])
    return plan


def describe(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-able data: stored with the deployment, served by ``/info``."""
    nodes = {n.id: n for n in plan.pipeline.graph.nodes}
    spec: dict[str, Any] = {
        "pipeline": plan.name,
        "steps": [
            {
                "name": s.id,
                "step": s.name,
                "inputs": jsonable({arg: ref.to_dict() for arg, ref in nodes[s.id].inputs.items()}),
                "upstream": s.upstream,
                "outputs": ["output"],
                "kind": ("async" if s.is_async else ("sync" if s.blocking else "sync-on-loop"))
                + ("-generator" if s.is_generator else ""),
            }
            for s in plan.steps
        ],
        "parameters": jsonable(plan.schema),
        "parameters_json_schema": plan.parameters_model.model_json_schema(),
        "outputs": list(plan.output_refs),
        "execution": "linear" if plan.linear else "graph",
        "capture": plan.pipeline.capture,
    }
    for entry in spec["steps"]:
        used = [r.name for r in nodes[entry["name"]].inputs.values() if r.kind == "resource"]
        if used:
            entry["resources"] = used
    if plan.resources:
        spec["resources"] = [
            {"name": name, "factory": slot.spec.label, "kind": slot.spec.kind}
            for name, slot in plan.resources.items()
        ]
    return spec
