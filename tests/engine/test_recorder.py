"""What a tracked run records, mode by mode: the RunRecorder hears a real run of the engine."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from zserve import get_context, pipeline, step
from zserve.engine.capture import CaptureLimits, resolve_request, sampled_in
from zserve.engine.plan import compile_plan
from zserve.engine.policies import StepPolicy
from zserve.engine.recorder import RunRecorder
from zserve.engine.redact import REDACTED
from zserve.engine.runner import execute
from zserve.errors import StepFailed


@step
def fetch(city: str, api_key: str) -> dict[str, Any]:
    get_context().log_metadata({"source": "test", "token": "t0p"})
    return {"city": city, "temp": 25, "auth_token": "abc"}


@step
def report(data: dict[str, Any]) -> str:
    if data["city"] == "Nowhere":
        raise ValueError("no such city")
    return f"{data['city']}: {data['temp']}"


@pipeline
def weather(city: str, api_key: str = "k-123") -> str:
    return report(fetch(city, api_key))


@step
def blob(n: int) -> bytes:
    return b"x" * n


@pipeline
def blobs(n: int) -> bytes:
    return blob(n)


async def run(
    pipe: Any, mode: str, job_id: str = "job-1", limits: CaptureLimits | None = None,
    policies: dict[str, StepPolicy] | None = None, **params: Any,
) -> RunRecorder:  # fmt: skip
    limits = limits or CaptureLimits()
    plan = compile_plan(pipe)
    recorder = RunRecorder(
        resolve_request(limits, override=mode), job_id=job_id, pipeline=plan.name,
        deployment_id="dep-1", limits=limits, policies=policies,
    )  # fmt: skip

    with contextlib.suppress(StepFailed):
        await execute(plan, plan.validate_parameters(params), job_id=job_id,
                      observers=(recorder,))  # fmt: skip
    return recorder


@pytest.mark.anyio
async def test_full_records_parameters_outputs_and_metadata_with_secrets_redacted() -> None:
    record = (await run(weather, "full", city="Paris")).record
    assert record is not None
    doc = json.loads(json.dumps(record.to_dict()))
    assert doc["status"] == "completed" and doc["capture"] == "full"
    assert doc["deployment_id"] == "dep-1" and doc["job_id"] == "job-1"
    assert doc["parameters"] == {"city": "Paris", "api_key": REDACTED}
    assert doc["metadata"] == {"source": "test", "token": REDACTED}
    steps = {s["name"]: s for s in doc["steps"]}
    assert [s["status"] for s in doc["steps"]] == ["completed", "completed"]
    fetched = steps["fetch"]["outputs"]["output"]
    assert fetched["value"] == {"city": "Paris", "temp": 25, "auth_token": REDACTED}
    assert fetched["content_type"] == "application/json" and fetched["loadable"] is True
    assert steps["report"]["outputs"]["output"]["value"] == "Paris: 25"
    assert (
        doc["duration_ms"] >= 0 and "k-123" not in json.dumps(doc) and "abc" not in json.dumps(doc)
    )


@pytest.mark.anyio
async def test_metadata_records_steps_and_sizes_but_no_values() -> None:
    record = (await run(weather, "metadata", city="Paris")).record
    assert record is not None
    doc = record.to_dict()
    assert "parameters" not in doc and "metadata" not in doc
    for s in doc["steps"]:
        assert "outputs" not in s and s["output_size"] > 0 and s["duration_ms"] >= 0


@pytest.mark.anyio
async def test_a_failed_step_has_its_error_and_the_traceback_stays_out_of_the_document() -> None:
    record = (await run(weather, "metadata", city="Nowhere")).record
    assert record is not None
    assert record.status == "failed"
    assert record.error is not None and record.error["step"] == "report"
    failed = record.steps[1]
    assert failed.error is not None and "Traceback" in failed.error["traceback"]
    doc = json.dumps(record.to_dict())
    assert "no such city" in doc and "Traceback" not in doc


@pytest.mark.anyio
async def test_errors_only_keeps_failures_only_with_the_values_of_completed_steps() -> None:
    assert (await run(weather, "errors_only", city="Paris")).record is None
    record = (await run(weather, "errors_only", city="Nowhere")).record
    assert record is not None and record.capture == "errors_only"
    assert record.parameters == {"city": "Nowhere", "api_key": REDACTED}
    assert record.steps[0].outputs is not None  # the step that completed
    assert record.steps[1].error is not None and record.steps[1].error["type"] == "ValueError"


@pytest.mark.anyio
async def test_sampled_records_the_requests_the_sampler_picks() -> None:
    ids = [f"job-{i}" for i in range(40)]
    limits = CaptureLimits(sample_rate=0.5, sample_seed="s")
    kept = [
        (await run(weather, "sampled", job_id=i, limits=limits, city="Oslo")).record for i in ids
    ]
    assert [r is not None for r in kept] == [sampled_in(i, 0.5, "s") for i in ids]
    assert any(kept) and not all(kept)
    picked = next(r for r in kept if r is not None)
    assert picked.parameters is not None  # sampled records are full records


@pytest.mark.anyio
async def test_a_ceiling_below_full_strips_values_from_sampled_and_errors_only() -> None:
    limits = CaptureLimits(ceiling="sampled", sample_rate=1.0)
    record = (await run(weather, "errors_only", limits=limits, city="Nowhere")).record
    assert record is not None and record.parameters is None
    assert all(s.outputs is None for s in record.steps)
    capped = (await run(weather, "full", limits=limits, city="Oslo")).record
    assert capped is not None and capped.capture == "sampled" and capped.parameters is None


@pytest.mark.anyio
async def test_a_step_sets_its_own_mode_and_none_keeps_its_values_out() -> None:
    private = (
        await run(weather, "full", policies={"fetch": StepPolicy(mode="none")}, city="Oslo")
    ).record
    assert private is not None
    fetched, reported = private.steps
    assert fetched.outputs is None and fetched.output_size is None
    assert reported.outputs is not None
    debug = (
        await run(weather, "metadata", policies={"report": StepPolicy(mode="full")}, city="Oslo")
    ).record
    assert debug is not None and debug.parameters is None
    assert debug.steps[0].outputs is None and debug.steps[1].outputs is not None


@pytest.mark.anyio
async def test_none_records_nothing() -> None:
    recorder = await run(weather, "none", city="Paris")
    assert recorder.record is None and not recorder.active


@pytest.mark.parametrize(("n", "truncated"), [(10, False), (100, True)])
@pytest.mark.anyio
async def test_bytes_outputs_are_kept_as_bytes_and_capped(n: int, truncated: bool) -> None:
    limits = CaptureLimits()
    plan = compile_plan(blobs)
    recorder = RunRecorder(
        resolve_request(limits, override="full"), job_id="j", pipeline=plan.name, max_bytes=50
    )
    await execute(plan, {"n": n}, job_id="j", observers=(recorder,))
    assert recorder.record is not None
    artifact = recorder.record.steps[0].outputs["output"]  # type: ignore[index]
    assert artifact.content_type == "application/octet-stream" and artifact.size == n
    assert artifact.truncated is truncated and artifact.data == b"x" * min(n, 50)
    assert "value" not in artifact.to_dict()
