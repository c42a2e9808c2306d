"""Per-step and per-value capture policies as ``compile_plan`` compiles them (engine/policies.py):
settings over annotations with ``none`` as a floor, the policies by step id, the parameters and
outputs never stored, and ``step_value_mode``. The checks of ``Capture`` and of the settings
themselves are in test_capture_settings.py."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest

from tests.sdk import _policy_future, _policy_plain
from zserve import Capture, pipeline, step
from zserve.engine.plan import compile_plan
from zserve.engine.policies import (
    StepPolicy,
    ValuePolicy,
    input_value_mode,
    redaction,
    step_value_mode,
)
from zserve.engine.runner import execute
from zserve.errors import InvalidParameters, PipelineDefinitionError

# -- compiled policies -----------------------------------------------------------------------


@step
def echo(x: str) -> str:
    return x


def test_a_plan_without_policies_has_none() -> None:
    @pipeline
    def p(x: str) -> str:
        return echo(echo(x))

    plan = compile_plan(p)
    assert plan.policies == {}
    assert plan.private_parameters == frozenset()
    assert plan.private_outputs == frozenset()
    assert plan.redact is None
    assert plan.capture_flush is None
    assert all("capture_policy" not in entry for entry in plan.spec["steps"])


def test_pipeline_redact_and_capture_flush_reach_the_plan() -> None:
    @pipeline(settings={"redact": ["ssn", "iban"], "capture_flush": "background"})
    def p(x: str) -> str:
        return echo(x)

    plan = compile_plan(p)
    assert plan.redact == ("ssn", "iban")
    assert plan.capture_flush == "background"
    assert plan.policies == {}


def test_settings_and_annotations_compile_into_a_step_policy() -> None:
    @step(
        settings={
            "capture": "metadata",
            "artifacts": "sampled",
            "inputs": {"doc": {"mode": "full", "artifacts": "errors_only"}},
            "redact": ["ssn"],
        }
    )
    def read(
        doc: str, token: Annotated[str, Capture("none")], page: int = 1
    ) -> Annotated[str, Capture("full", artifacts="full")]:
        return doc

    @pipeline
    def p(doc: str, token: str) -> str:
        return read(doc, token)

    plan = compile_plan(p)
    assert plan.policies == {
        "read": StepPolicy(
            mode="metadata",
            artifacts="sampled",
            inputs={
                "doc": ValuePolicy("full", "errors_only"),
                "token": ValuePolicy("none", None),
            },
            output=ValuePolicy("full", "full"),
            redact=("ssn",),
        )
    }
    assert plan.spec["steps"][0]["capture_policy"] == {
        "mode": "metadata",
        "artifacts": "sampled",
        "inputs": {"doc": {"mode": "full", "artifacts": "errors_only"}, "token": {"mode": "none"}},
        "output": {"mode": "full", "artifacts": "full"},
        "redact": ["ssn"],
    }
    assert plan.private_parameters == {"token"}
    assert plan.private_outputs == frozenset()
    assert plan.redact is None


@pytest.mark.parametrize(
    ("setting", "annotation", "expected"),
    [
        ("metadata", Capture("full"), ValuePolicy("metadata")),  # the settings entry wins
        ({"artifacts": "none"}, Capture("full", artifacts="full"), ValuePolicy(None, "none")),
        ("full", Capture("none"), ValuePolicy("none")),  # none from the annotation is a floor
        ("none", Capture("full"), ValuePolicy("none")),  # none from the settings wins too
        (None, Capture("sampled", artifacts="none"), ValuePolicy("sampled", "none")),
        ("errors_only", None, ValuePolicy("errors_only")),
    ],
)
def test_a_settings_entry_wins_over_an_annotation_except_none(
    setting: Any, annotation: Capture | None, expected: ValuePolicy
) -> None:
    settings: dict[str, Any] = {}
    if setting is not None:
        settings = {"inputs": {"v": setting}, "outputs": setting}
    hint: Any = str if annotation is None else Annotated[str, annotation]

    def f(v: str) -> str:
        return v

    f.__annotations__ = {"v": hint, "return": hint}
    s = step(settings=settings)(f)

    @pipeline
    def p(v: str) -> str:
        return s(v)

    policy = compile_plan(p).policies["f"]
    assert policy.inputs == {"v": expected}
    assert policy.output == expected


def test_policies_are_keyed_by_step_id_for_a_step_used_twice() -> None:
    @step(settings={"capture": "full"})
    def clean(text: str) -> str:
        return text.strip()

    @pipeline
    def p(a: str, b: str) -> tuple[str, str]:
        return echo(clean(a)), clean(b)

    plan = compile_plan(p)
    assert [s.id for s in plan.steps] == ["clean", "echo", "clean_2"]
    assert set(plan.policies) == {"clean", "clean_2"}
    assert plan.policies["clean"] == plan.policies["clean_2"] == StepPolicy(mode="full")


def test_a_parameter_passed_to_a_none_input_is_private() -> None:
    @step(settings={"inputs": {"password": "none"}})
    def login(user: str, password: str) -> str:
        return user

    @pipeline
    def p(user: str, password: str, unused: int = 0) -> str:
        return echo(login(user, password))

    plan = compile_plan(p)
    assert plan.private_parameters == {"password"}
    assert plan.private_outputs == frozenset()


def test_every_parameter_passed_to_a_none_step_is_private() -> None:
    @step(settings={"capture": "none"})
    def patient(name: str, record_id: str, flag: bool = False) -> str:
        return name

    @pipeline
    def p(name: str, record_id: str, city: str) -> tuple[str, str]:
        return patient(name, record_id, True), echo(city)

    plan = compile_plan(p)
    assert plan.private_parameters == {"name", "record_id"}
    # a none step's own output is never stored either
    assert plan.private_outputs == {"patient"}


def test_a_parameter_annotated_none_in_the_pipeline_signature_is_private() -> None:
    @pipeline
    def p(
        user: str, api_key: Annotated[str, Capture("none")], tag: Annotated[str, Capture("full")]
    ) -> str:
        return echo(user)

    plan = compile_plan(p)
    assert plan.private_parameters == {"api_key"}


def test_a_none_hidden_in_a_union_still_counts() -> None:
    @step
    def use(token: Annotated[str, Capture("none")] | None = None) -> str:
        return "ok"

    @pipeline
    def p(token: Annotated[str, Capture("none")] | None = None, other: str | None = None) -> str:
        return use(other)

    plan = compile_plan(p)
    assert plan.private_parameters == {"token", "other"}


def test_an_output_passed_to_a_none_input_downstream_is_private() -> None:
    @step
    def fetch(user: str) -> dict[str, str]:
        return {"user": user}

    @step
    def profile(user: str) -> dict[str, str]:
        return {"user": user}

    @step
    def mask(data: Annotated[dict[str, str], Capture("none")], extra: dict[str, str]) -> str:
        return "***"

    @step(settings={"outputs": "none"})
    def secret_of(user: str) -> str:
        return user[::-1]

    @pipeline
    def p(user: str) -> tuple[str, str, dict[str, str]]:
        data = fetch(user)
        return mask(data, profile(user)), secret_of(user), profile(user)

    plan = compile_plan(p)
    # fetch flows into a none input, secret_of's own output is none; profile is not private
    assert plan.private_outputs == {"fetch", "secret_of"}
    assert plan.private_parameters == frozenset()
    assert set(plan.policies) == {"mask", "secret_of"}


def test_a_step_that_calls_no_step_reads_the_pipeline_signature() -> None:
    @pipeline
    def p(
        x: int, pin: Annotated[int, Capture("none")] = 0
    ) -> Annotated[int, Capture("none", artifacts="none")]:
        return x * 2 + pin

    plan = compile_plan(p)
    assert plan.private_parameters == {"pin"}
    assert plan.private_outputs == {"p"}
    assert plan.policies["p"].output == ValuePolicy("none", "none")


# -- Annotated parameters still validate requests --------------------------------------------


def test_annotated_pipeline_parameters_still_validate_requests() -> None:
    @step
    def count(text: Annotated[str, Capture("none")], times: int) -> int:
        return len(text) * times

    @pipeline
    def p(text: Annotated[str, Capture("none")], times: Annotated[int, Capture("full")] = 1) -> int:
        return count(text, times)

    plan = compile_plan(p)
    assert plan.private_parameters == {"text"}
    assert plan.schema == {
        "text": {"type": "str", "required": True},
        "times": {"type": "int", "required": False, "default": 1},
    }
    props = plan.parameters_model.model_json_schema()["properties"]
    assert props["text"]["type"] == "string" and props["times"]["type"] == "integer"
    req = plan.parse_request('{"parameters": {"text": "abc", "times": 2}}')
    assert dict(req.parameters) == {"text": "abc", "times": 2}
    with pytest.raises(InvalidParameters) as err:
        plan.parse_request('{"parameters": {"text": 5, "times": "many"}}')
    assert {tuple(e["loc"]) for e in err.value.errors} >= {
        ("parameters", "text"),
        ("parameters", "times"),
    }
    assert plan.validate_parameters({"text": "ab"}) == {"text": "ab", "times": 1}
    with pytest.raises(InvalidParameters):
        plan.validate_parameters({"times": 1})
    params = plan.validate_parameters({"text": "abcd", "times": 3})
    assert asyncio.run(execute(plan, params, job_id="j")) == {"output": 12}


# -- annotations as objects, as strings, and strings that cannot be evaluated yet -------------


def test_annotations_in_a_module_without_future_annotations() -> None:
    plan = compile_plan(_policy_plain.plain_login)
    assert plan.policies == {
        "login": StepPolicy(
            inputs={"api_key": ValuePolicy("none"), "note": ValuePolicy("metadata")},
            output=ValuePolicy("full", "errors_only"),
        )
    }
    assert plan.private_parameters == {"api_key"}


def test_annotations_in_a_future_annotations_module_with_a_forward_reference() -> None:
    plan = compile_plan(_policy_future.future_docs)
    assert plan.policies == {
        "load": StepPolicy(inputs={"token": ValuePolicy("none")}, output=ValuePolicy("full"))
    }
    assert plan.private_parameters == {"token"}
    params = plan.validate_parameters({"doc_id": "a1", "token": "t"})
    assert asyncio.run(execute(plan, params, job_id="j")) == {"output": "A1"}


def test_an_annotation_that_cannot_be_evaluated_is_tolerated_unless_it_names_capture() -> None:
    class Local:  # not reachable from the module's globals: its annotation stays a string
        pass

    @step
    def use(thing: Local, key: Annotated[str, Capture("none")]) -> Local:
        return thing

    @pipeline
    def p(key: str) -> Any:
        return use(None, key)  # type: ignore[arg-type]

    plan = compile_plan(p)
    assert plan.policies == {"use": StepPolicy(inputs={"key": ValuePolicy("none")})}
    assert plan.private_parameters == {"key"}

    @step
    def hidden(key: Annotated[Local, Capture("none")]) -> str:
        return "x"

    @pipeline
    def q(key: str) -> str:
        return hidden(key)  # type: ignore[arg-type]

    # a policy is never dropped in silence: the annotation names Capture, so it must evaluate
    with pytest.raises(
        PipelineDefinitionError,
        match=r"'.*hidden': the annotation of 'key' \(Annotated\[Local, Capture\('none'\)\]\) "
        r"names a Capture policy but cannot be evaluated \(NameError: .*\); define the names it "
        r"uses at module level",
    ):
        compile_plan(q)


# -- step_value_mode --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_mode", "policy", "expected"),
    [
        # no policy: the request's mode, artifacts following it
        ("full", None, ("full", "full")),
        ("sampled", None, ("sampled", "sampled")),
        ("errors_only", None, ("errors_only", "errors_only")),
        ("metadata", None, ("metadata", "none")),
        ("none", None, ("none", "none")),
        # the step's mode over the request's
        ("metadata", StepPolicy(mode="full"), ("full", "full")),
        ("full", StepPolicy(mode="metadata"), ("metadata", "none")),
        # the value's mode over the step's
        (
            "metadata",
            StepPolicy(mode="full", output=ValuePolicy("sampled")),
            ("sampled", "sampled"),
        ),
        # none anywhere is a floor
        ("full", StepPolicy(mode="none", output=ValuePolicy("full")), ("none", "none")),
        ("full", StepPolicy(mode="full", output=ValuePolicy("none")), ("none", "none")),
        (
            "full",
            StepPolicy(artifacts="full", output=ValuePolicy("none", "full")),
            ("none", "none"),
        ),
        # artifacts set on its own: the value's over the step's over the mode
        ("metadata", StepPolicy(artifacts="errors_only"), ("metadata", "errors_only")),
        ("full", StepPolicy(artifacts="none"), ("full", "none")),
        (
            "full",
            StepPolicy(artifacts="none", output=ValuePolicy(None, "sampled")),
            ("full", "sampled"),
        ),
        (
            "metadata",
            StepPolicy(artifacts="sampled", output=ValuePolicy("full")),
            ("full", "sampled"),
        ),
    ],
)
def test_step_value_mode(
    request_mode: str, policy: StepPolicy | None, expected: tuple[str, str]
) -> None:
    assert step_value_mode(request_mode, policy) == expected


def test_step_value_mode_of_the_step_itself_leaves_the_output_policy_out() -> None:
    policy = StepPolicy(mode="metadata", output=ValuePolicy("none"))
    assert step_value_mode("full", policy) == ("none", "none")
    assert step_value_mode("full", policy, output=False) == ("metadata", "none")


def test_input_value_mode() -> None:
    policy = StepPolicy(mode="full", inputs={"token": ValuePolicy("none")})
    assert input_value_mode("metadata", policy, "token") == ("none", "none")
    assert input_value_mode("metadata", policy, "doc") == ("full", "full")
    assert input_value_mode("metadata", None, "doc") == ("metadata", "none")


def test_redaction_adds_a_steps_patterns_to_the_pipelines() -> None:
    assert redaction(None, None) is None
    assert redaction(("ssn",), None) == ("ssn",)
    assert redaction(None, StepPolicy(redact=("iban",))) == ("iban",)
    assert redaction(("ssn", "iban"), StepPolicy(redact=("iban", "pin"))) == ("ssn", "iban", "pin")
