"""Per-step and per-value capture policies, compiled once per plan (``compile_plan``).

A step's policy comes from its ``settings`` (``capture``, ``artifacts``, ``inputs``,
``outputs``, ``redact``; checked when it was decorated) and from ``Capture`` in the
``Annotated`` metadata of its parameters and return annotation. When both name the same value
the settings entry wins as a whole (an ``artifacts`` it leaves out is not taken from the
annotation), except that ``none`` from either one wins. Only steps that set
anything get a ``StepPolicy``; a plan without policies has empty ones and pays nothing per
request.

What is never stored, whatever a request asks (``none`` is a floor, and it follows the value):

- ``private_parameters``: pipeline parameters annotated ``Capture("none")`` in the pipeline's
  signature, or passed directly into a step input whose policy is ``none``, or into any input
  of a step whose own mode is ``none``. They are left out of a run's parameters.
- ``private_outputs``: step ids whose output is ``none`` (the output's policy or the step's
  mode), or is passed directly into such an input or such a step.

``step_value_mode(request_mode, policy)`` gives the (mode, artifacts) of a step's output: the
mode by ``engine.capture.resolve_value`` (the value's > the step's > the request's; ``none`` at
any level wins); ``artifacts`` is the value's own setting, else the step's, else follows the
mode (full -> full, sampled -> sampled, errors_only -> errors_only, metadata -> none, none ->
none); a ``none`` mode always stores no artifact. ``input_value_mode`` does the same for one
input. Redaction patterns of a step add to the pipeline's (``redaction``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zserve.engine.capture import resolve_value
from zserve.sdk.capture import (
    StepPolicy,
    ValuePolicy,
    capture_in,
    check_value_setting,
    type_hints,
)
from zserve.sdk.pipeline import Pipeline
from zserve.sdk.tracing import Graph, TracedStep

__all__ = [
    "Policies",
    "StepPolicy",
    "ValuePolicy",
    "compile_policies",
    "describe_policy",
    "input_value_mode",
    "redaction",
    "step_policy",
    "step_value_mode",
]

#: The artifacts setting a mode implies when none is set.
_ARTIFACTS = {
    "full": "full",
    "sampled": "sampled",
    "errors_only": "errors_only",
    "metadata": "none",
    "none": "none",
}


@dataclass(frozen=True)
class Policies:
    """What ``compile_plan`` stores on the plan (``Plan.policies`` and the rest)."""

    steps: dict[str, StepPolicy] = field(default_factory=dict)
    private_parameters: frozenset[str] = frozenset()
    private_outputs: frozenset[str] = frozenset()
    redact: tuple[str, ...] | None = None
    capture_flush: str | None = None


def _merge(setting: ValuePolicy | None, annotated: ValuePolicy | None) -> ValuePolicy | None:
    """The settings entry wins over the annotation, but ``none`` from either wins."""
    if setting is None or annotated is None:
        return setting or annotated
    if annotated.mode == "none" and setting.mode != "none":
        return ValuePolicy("none", setting.artifacts)
    return setting


def _annotated(annotation: Any) -> ValuePolicy | None:
    found = capture_in(annotation)
    return None if found is None else ValuePolicy(found.mode, found.artifacts)


def step_policy(step: TracedStep) -> StepPolicy | None:
    """A step's compiled policy, or None when it sets nothing."""
    settings: dict[str, Any] = getattr(step, "settings", None) or {}
    hints = type_hints(step.fn)
    where = f"step '{step.name}'"
    inputs: dict[str, ValuePolicy] = {}
    given = settings.get("inputs") or {}
    for name in step.signature.parameters:
        setting = None
        if given.get(name) is not None:
            setting = check_value_setting(given[name], f"{where}, input '{name}'")
        merged = _merge(setting, _annotated(hints.get(name)))
        if merged is not None:
            inputs[name] = merged
    out_setting = settings.get("outputs")
    output = _merge(
        None if out_setting is None else check_value_setting(out_setting, f"{where}, outputs"),
        _annotated(hints.get("return")),
    )
    redact = settings.get("redact")
    policy = StepPolicy(
        mode=settings.get("capture"),
        artifacts=settings.get("artifacts"),
        inputs=inputs,
        output=output,
        redact=None if redact is None else tuple(redact),
    )
    return None if policy == StepPolicy() else policy


def _input_none(policy: StepPolicy | None, name: str) -> bool:
    if policy is None:
        return False
    value = policy.inputs.get(name)
    return policy.mode == "none" or (value is not None and value.mode == "none")


def _output_none(policy: StepPolicy | None) -> bool:
    if policy is None:
        return False
    return policy.mode == "none" or (policy.output is not None and policy.output.mode == "none")


def compile_policies(pipe: Pipeline, graph: Graph) -> Policies:
    """The policies of every step of ``graph`` (by step id), and what is never stored."""
    steps: dict[str, StepPolicy] = {}
    for node in graph.nodes:
        policy = step_policy(node.step)
        if policy is not None:
            steps[node.id] = policy
    signature = {
        name: capture_in(annotation) for name, annotation in pipe.annotations(extras=True).items()
    }
    private_parameters = {
        name
        for name, found in signature.items()
        if found is not None and found.mode == "none" and name in pipe.signature.parameters
    }
    private_outputs = {sid for sid, policy in steps.items() if _output_none(policy)}
    for node in graph.nodes:
        policy = steps.get(node.id)
        for name, ref in node.inputs.items():
            if not _input_none(policy, name):
                continue
            if ref.kind == "param":
                private_parameters.add(ref.name)
            elif ref.kind == "step":
                private_outputs.add(ref.name)
    return Policies(
        steps=steps,
        private_parameters=frozenset(private_parameters),
        private_outputs=frozenset(private_outputs),
        redact=pipe.redact,
        capture_flush=pipe.capture_flush,
    )


def step_value_mode(
    request_mode: str, policy: StepPolicy | None, *, output: bool = True
) -> tuple[str, str]:
    """(mode, artifacts) of a step's output under a request's effective mode; with
    ``output=False``, of the step itself (its output's own policy left out)."""
    value = policy.output if (policy is not None and output) else None
    return _value_mode(request_mode, policy, value)


def input_value_mode(request_mode: str, policy: StepPolicy | None, name: str) -> tuple[str, str]:
    """(mode, artifacts) of one input of a step under a request's effective mode."""
    return _value_mode(request_mode, policy, None if policy is None else policy.inputs.get(name))


def _value_mode(
    request_mode: str, policy: StepPolicy | None, value: ValuePolicy | None
) -> tuple[str, str]:
    step_mode = None if policy is None else policy.mode
    mode = resolve_value(request_mode, step_mode, None if value is None else value.mode)
    if mode == "none":
        return mode, "none"
    explicit = (value.artifacts if value is not None else None) or (
        policy.artifacts if policy is not None else None
    )
    return mode, explicit or _ARTIFACTS[mode]


def redaction(
    pipeline: tuple[str, ...] | None, policy: StepPolicy | None
) -> tuple[str, ...] | None:
    """The redaction patterns for one step's values: the pipeline's and the step's together."""
    own = None if policy is None else policy.redact
    if pipeline is None or own is None:
        return own if pipeline is None else pipeline
    return tuple(dict.fromkeys((*pipeline, *own)))


def describe_policy(policy: StepPolicy) -> dict[str, Any]:
    """A step's policy as JSON data, for the plan's spec; unset fields are left out."""

    def value(v: ValuePolicy) -> dict[str, str]:
        return {k: x for k, x in (("mode", v.mode), ("artifacts", v.artifacts)) if x is not None}

    doc: dict[str, Any] = {}
    if policy.mode is not None:
        doc["mode"] = policy.mode
    if policy.artifacts is not None:
        doc["artifacts"] = policy.artifacts
    if policy.inputs:
        doc["inputs"] = {name: value(v) for name, v in policy.inputs.items()}
    if policy.output is not None:
        doc["output"] = value(policy.output)
    if policy.redact is not None:
        doc["redact"] = list(policy.redact)
    return doc
