"""Capture policies as authors write them, checked when a step or pipeline is decorated:
``Capture(...)``, ``@step(settings=...)`` and the pipeline's ``redact`` and ``capture_flush``.
Each refusal names the step or pipeline, the bad key or value, and the fix."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from zserve import Capture, pipeline, step
from zserve.errors import PipelineDefinitionError

# -- Capture ---------------------------------------------------------------------------------


def test_capture_is_a_frozen_hashable_value() -> None:
    assert Capture("none") == Capture("none")
    assert hash(Capture("full", artifacts="errors_only")) == hash(
        Capture("full", artifacts="errors_only")
    )
    assert len({Capture("none"), Capture("none"), Capture("full")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        Capture("none").mode = "full"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Capture("full", "full")  # type: ignore[call-arg]  # artifacts is keyword-only


def test_capture_refuses_an_unknown_mode_naming_the_allowed_ones() -> None:
    with pytest.raises(
        PipelineDefinitionError, match=r"unknown capture mode 'secret'; use one of "
    ):
        Capture("secret")
    with pytest.raises(PipelineDefinitionError, match="none, metadata, full, sampled, errors_only"):
        Capture("everything")


def test_capture_refuses_an_unknown_artifacts_setting() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"unknown artifacts setting 'always'; use one of none, errors_only, sampled, full",
    ):
        Capture("full", artifacts="always")


# -- @step(settings=...) is checked when the step is decorated -------------------------------


def _fn(token: str, doc: str = "") -> str:
    return doc


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"captur": "none"}, r"step '_fn': unknown setting\(s\) \['captur'\]; known: \["),
        ({"capture": "secret"}, r"step '_fn', setting 'capture': unknown capture mode 'secret'"),
        ({"artifacts": "all"}, r"step '_fn', setting 'artifacts': unknown artifacts setting 'all'"),
        (
            {"inputs": {"tokn": "none"}},
            r"step '_fn': setting 'inputs' names 'tokn', which is not a parameter of the step; "
            r"use one of \['token', 'doc'\]",
        ),
        ({"inputs": ["token"]}, r"step '_fn': setting 'inputs' must map parameter names"),
        ({"inputs": {"token": "hidden"}}, r"step '_fn', input 'token': unknown capture mode"),
        (
            {"inputs": {"token": {"mode": "none", "artefacts": "none"}}},
            r"step '_fn', input 'token': unknown key\(s\) \['artefacts'\]; write a mode",
        ),
        ({"inputs": {"token": {}}}, r"step '_fn', input 'token': an empty policy; write a mode"),
        (
            {"inputs": {"token": {"artifacts": "some"}}},
            r"input 'token': unknown artifacts setting 'some'",
        ),
        ({"inputs": {"token": 0}}, r"step '_fn', input 'token': 0 is not a policy; write a mode"),
        ({"outputs": "secret"}, r"step '_fn', setting 'outputs': unknown capture mode 'secret'"),
        ({"redact": "ssn"}, r"step '_fn': 'redact' must be a list of key words"),
        ({"redact": ["user_ssn"]}, r"redaction pattern 'user_ssn' is not one word; .* write 'ssn'"),
        ({"redact": [""]}, r"redaction pattern '' is not one word"),
    ],
)
def test_step_settings_are_checked_at_decoration(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=message):
        step(settings=settings)(_fn)


def test_step_settings_must_be_a_dict() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"step '_fn': settings must be a dict"):
        step(settings=["capture"])(_fn)  # type: ignore[call-overload]


def test_step_keeps_its_settings() -> None:
    settings = {
        "capture": "full",
        "artifacts": "errors_only",
        "inputs": {"token": "none", "doc": {"mode": "metadata", "artifacts": "full"}},
        "outputs": Capture("sampled"),
        "redact": ["ssn", "iban"],
    }
    s = step(settings=settings)(_fn)
    assert s.settings == settings
    assert step(_fn).settings == {}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"redact": "ssn,iban"}, r"pipeline 'p': 'redact' must be a list of key words"),
        ({"redact": ["x-ray"]}, r"pipeline 'p': redaction pattern 'x-ray' is not one word"),
        (
            {"capture_flush": "later"},
            r"pipeline 'p': unknown capture_flush 'later'; use one of sync, background",
        ),
        ({"flush": "sync"}, r"pipeline 'p': unknown setting\(s\) \['flush'\]; known: "),
    ],
)
def test_pipeline_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    def p(x: int) -> int:
        return x

    with pytest.raises(PipelineDefinitionError, match=message):
        pipeline(settings=settings)(p)
