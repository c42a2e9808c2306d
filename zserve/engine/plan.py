"""Compile a pipeline once into a ``Plan``: the order of its steps, how each step's arguments
are bound, how its work is grouped onto the event loop and worker threads, its resources' slots
and batched steps' queues, and the pydantic models that validate a request
(``zserve.engine.requests``)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from zserve.engine.batching import Batcher, BatchHook, BatchSpec, describe_batching
from zserve.engine.placement import Placement
from zserve.engine.policies import StepPolicy, compile_policies, describe_policy
from zserve.engine.requests import CaptureOverride, InvokeRequest, build_models, request_error
from zserve.engine.resources import ResourceSlot, resource_slots
from zserve.engine.values import jsonable
from zserve.errors import InvalidParameters
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
    #: a batched step (``@step(batch=N)``): the queue its runs' calls go through
    batcher: Batcher | None = None

    def kwargs(self, params: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
        return {name: get(params, results) for name, get in self.args}


@dataclass
class Stage:
    """A run of consecutive steps of a linear plan that share one way of running.

    ``"thread"``: consecutive blocking sync steps, run one after the other in one thread hop.
    ``"loop"``: async steps and non-blocking sync steps, run on the event loop.
    ``"batch"``: one batched step (engine/batching.py), never merged with others.
    """

    where: Literal["thread", "loop", "batch"]
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
    #: the queues of its batched steps; empty for most plans, which then pay nothing for them
    batchers: tuple[Batcher, ...] = ()
    #: the resources its steps ask for, by name, in the order they are first asked for: one
    #: slot each, filled by ``zserve.engine.worker.Worker``
    resources: dict[str, ResourceSlot] = field(default_factory=dict)

    @property
    def linear(self) -> bool:
        return self.stages is not None

    @property
    def on_batch(self) -> BatchHook | None:
        """Told (step, size, seconds its oldest call waited) of every batch (server metrics)."""
        return self.batchers[0].on_batch if self.batchers else None

    @on_batch.setter
    def on_batch(self, hook: BatchHook | None) -> None:
        for batcher in self.batchers:
            batcher.on_batch = hook

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
            raise request_error(exc) from None


def _compile_step(node: Node, slots: dict[str, ResourceSlot]) -> CompiledStep:
    step = node.step
    fn = step.fn
    batcher = None
    if step.batch is not None:  # each element's arity is checked by the batcher
        spec = BatchSpec(step.batch, step.batch_wait_ms)
        shared = frozenset(a for a, ref in node.inputs.items() if ref.kind == "resource")
        batcher = Batcher(node.id, fn, spec, is_async=step.is_async, on_loop=not step.blocking,
                          arity=node.arity, shared=shared)  # fmt: skip
    elif node.arity is not None and not step.is_generator:
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
        batcher=batcher,
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
        if s.batcher is not None:
            stages.append(Stage("batch", [s]))
            continue
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
    params_model, request_model, defaults = build_models(pipe)
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
        batchers=tuple(s.batcher for s in steps if s.batcher is not None),
        resources=slots,
    )
    plan.spec = describe(plan)
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
    batching = describe_batching(plan.batchers)
    for entry in spec["steps"]:
        if entry["name"] in plan.policies:
            entry["capture_policy"] = describe_policy(plan.policies[entry["name"]])
        if entry["name"] in batching:
            entry["batch"] = batching[entry["name"]]
        used = [r.name for r in nodes[entry["name"]].inputs.values() if r.kind == "resource"]
        if used:
            entry["resources"] = used
    if plan.resources:
        spec["resources"] = [
            {"name": name, "factory": slot.spec.label, "kind": slot.spec.kind}
            for name, slot in plan.resources.items()
        ]
    return spec
