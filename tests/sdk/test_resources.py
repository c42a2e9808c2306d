"""Resources: declared by a step parameter's default, built once per worker by the engine's
``Worker``, torn down after, and never part of a request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from tests import resource_pipelines as rp
from zserve import Resource, pipeline, step
from zserve.cli import app
from zserve.engine.plan import compile_plan
from zserve.engine.runner import execute
from zserve.engine.worker import Worker, run_once
from zserve.errors import PipelineDefinitionError, ResourceFailed, StepFailed
from zserve.sdk.resources import ResourceSpec
from zserve.sdk.schema import parameter_schema


@pytest.fixture(autouse=True)
def fresh_events() -> Iterator[list[str]]:
    rp.EVENTS.clear()
    yield rp.EVENTS
    rp.EVENTS.clear()


def run(plan: Any, **params: Any) -> dict[str, Any]:
    outputs, _ = asyncio.run(run_once(plan, params, job_id="test"))
    return outputs


def test_each_factory_kind_is_built_once_and_torn_down_once_in_reverse() -> None:
    plan = compile_plan(rp.kinds)
    assert {name: slot.spec.kind for name, slot in plan.resources.items()} == {
        "sync_fn": "sync", "gen_fn": "generator", "cm_fn": "context-manager",
        "async_fn": "async", "agen_fn": "async-generator", "acm_fn": "async-context-manager",
    }  # fmt: skip
    outputs = run(plan, x=7)
    expected = [7, "sync", "generator", "context-manager", "async", "async-generator",
                "async-context-manager", "generator"]  # fmt: skip
    assert outputs["output"] == expected
    built = ["build sync", "build generator", "build context-manager", "build async",
             "build async-generator", "build async-context-manager"]  # fmt: skip
    torn = ["teardown async-context-manager", "teardown async-generator",
            "teardown context-manager", "teardown generator"]  # fmt: skip
    assert built + torn == rp.EVENTS


def test_a_worker_builds_once_for_many_runs() -> None:
    plan = compile_plan(rp.kinds)

    async def main() -> None:
        async with Worker(plan) as worker:
            for x in range(5):
                await execute(plan, {"x": x}, job_id=f"j{x}")
            assert [r["state"] for r in worker.status()] == ["ready"] * 6
            assert all(r["build_ms"] >= 0 for r in worker.status())
        assert [r["state"] for r in worker.status()] == ["closed"] * 6

    asyncio.run(main())
    assert sum(e.startswith("build") for e in rp.EVENTS) == 6
    assert sum(e.startswith("teardown") for e in rp.EVENTS) == 4


def test_same_factory_on_two_steps_is_one_instance() -> None:
    plan = compile_plan(rp.shared)
    assert list(plan.resources) == ["shared_model"]
    outputs = run(plan, x=1)
    assert outputs["first"] == outputs["second"]
    assert rp.EVENTS == ["build shared"]


def test_a_resource_is_never_a_request_parameter() -> None:
    plan = compile_plan(rp.kinds)
    assert parameter_schema(rp.kinds) == {"x": {"type": "int", "required": True}}
    assert list(plan.parameters_model.model_fields) == ["x"]
    assert set(plan.request_model.model_json_schema()["$defs"]["KindsParameters"]["properties"]) \
        == {"x"}  # fmt: skip
    assert plan.spec["parameters"] == {"x": {"type": "int", "required": True}}
    sync_entry = plan.spec["steps"][0]
    assert sync_entry["resources"] == ["sync_fn", "gen_fn", "cm_fn"]
    assert sync_entry["inputs"]["a"] == {"kind": "resource", "name": "sync_fn"}
    assert [r["name"] for r in plan.spec["resources"]] == list(plan.resources)
    assert plan.spec["resources"][0]["factory"] == "tests.resource_pipelines:sync_fn"


def test_an_implicit_pipeline_may_ask_for_a_resource() -> None:
    plan = compile_plan(rp.implicit)
    assert parameter_schema(rp.implicit) == {"x": {"type": "int", "required": True}}
    assert list(plan.resources) == ["sync_fn"]
    assert run(plan, x=3) == {"output": "sync:3"}


def test_passing_a_resource_in_the_body_is_refused() -> None:
    @step
    def use(x: int, model: str = Resource(rp.sync_fn)) -> str:
        return model

    @pipeline
    def passes(x: int) -> str:
        return use(x, model="mine")  # type: ignore[arg-type]

    with pytest.raises(PipelineDefinitionError, match="resources are injected, not passed"):
        compile_plan(passes)


def test_a_pipeline_that_calls_steps_takes_no_resource_parameter() -> None:
    @step
    def echo(x: int) -> int:
        return x

    @pipeline
    def wired(x: int, model: str = Resource(rp.sync_fn)) -> int:
        return echo(x)

    with pytest.raises(PipelineDefinitionError, match="declare the resource on the step"):
        compile_plan(wired)


def test_two_factories_with_one_name_are_refused() -> None:
    def other() -> str:
        return "other"

    @step
    def one(x: int, a: str = Resource(rp.sync_fn)) -> int:
        return x

    @step
    def two(x: int, b: str = Resource(other, name="sync_fn")) -> int:
        return x

    @pipeline
    def clash(x: int) -> int:
        return two(one(x))

    with pytest.raises(PipelineDefinitionError, match="two resources are named 'sync_fn'"):
        compile_plan(clash)


def test_a_resource_takes_no_capture_setting() -> None:
    with pytest.raises(PipelineDefinitionError, match="a resource is never captured"):

        @step(settings={"inputs": {"model": "none"}})
        def guarded(x: int, model: str = Resource(rp.sync_fn)) -> int:
            return x


def test_resource_needs_a_callable_and_types_as_its_value() -> None:
    with pytest.raises(PipelineDefinitionError, match="takes a factory function"):
        Resource(42)  # type: ignore[call-overload]
    spec = Resource(rp.cm_fn, name="cm")
    assert isinstance(spec, ResourceSpec)
    assert (spec.name, spec.kind, spec.label) == ("cm", "context-manager",
                                                  "tests.resource_pipelines:cm_fn")  # fmt: skip


def test_a_plan_run_without_a_worker_names_the_resource() -> None:
    plan = compile_plan(rp.implicit)
    with pytest.raises(StepFailed, match=r"resource 'sync_fn' .* is not built"):
        asyncio.run(execute(plan, {"x": 1}, job_id="j"))


def test_a_failing_factory_names_itself_and_closes_what_was_built() -> None:
    plan = compile_plan(rp.fails)
    with pytest.raises(ResourceFailed) as caught:
        run(plan, x=1)
    assert str(caught.value) == (
        "resource 'broken' (tests.resource_pipelines:broken) failed to build: "
        "OSError: weights.bin not found"
    )
    assert caught.value.exit_code == 3
    assert isinstance(caught.value.__cause__, OSError)
    assert rp.EVENTS == ["build generator", "teardown generator"]


def test_teardown_runs_when_the_run_fails() -> None:
    def boom_factory() -> Iterator[str]:
        rp.EVENTS.append("built")
        yield "v"
        rp.EVENTS.append("torn down")

    @step
    def boom(x: int, v: str = Resource(boom_factory)) -> int:
        raise ValueError("step failed")

    @pipeline
    def failing(x: int) -> int:
        return boom(x)

    with pytest.raises(StepFailed):
        run(compile_plan(failing), x=1)
    assert rp.EVENTS == ["built", "torn down"]


def test_a_teardown_that_raises_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    @contextlib.contextmanager
    def bad_teardown() -> Iterator[str]:
        yield "bad"
        raise RuntimeError("cannot close")

    @step
    def both(x: int, a: str = Resource(rp.gen_fn), b: str = Resource(bad_teardown)) -> str:
        return a + b

    @pipeline
    def closing(x: int) -> str:
        return both(x)

    assert run(compile_plan(closing), x=1) == {"output": "generatorbad"}
    assert rp.EVENTS == ["build generator", "teardown generator"]
    assert "The teardown of resource 'bad_teardown'" in caplog.text
    assert "RuntimeError: cannot close" in caplog.text


# -- zserve run ---------------------------------------------------------------------------------


def test_zserve_run_builds_once_and_tears_down(tmp_path: Any, monkeypatch: Any) -> None:
    log = tmp_path / "builds.log"
    monkeypatch.setenv(rp.LOG_ENV, str(log))
    result = CliRunner().invoke(app, ["run", "tests.resource_pipelines:counted", "-p", "x=4"])
    assert result.exit_code == 0, result.output
    assert '"x": 4' in result.stdout
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["build", "teardown"]


def test_zserve_run_with_a_failing_factory_exits_3(tmp_path: Any, monkeypatch: Any) -> None:
    log = tmp_path / "builds.log"
    monkeypatch.setenv(rp.LOG_ENV, str(log))
    monkeypatch.setenv(rp.FAIL_ENV, "no weights here")
    result = CliRunner().invoke(app, ["run", "tests.resource_pipelines:counted"])
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "Error: resource 'load_counted' (tests.resource_pipelines:load_counted) failed to "
        "build: OSError: no weights here"
    )
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["build"]
