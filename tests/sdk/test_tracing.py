from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zserve import pipeline, step
from zserve.errors import PipelineDefinitionError
from zserve.sdk.schema import parameter_schema
from zserve.sdk.tracing import Ref


@step
def double(x: int) -> int:
    return x * 2


@step
def add(a: int, b: int = 0) -> int:
    return a + b


@step
async def slow_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def test_step_called_outside_a_pipeline_is_the_plain_function() -> None:
    assert double(4) == 8
    assert add.fn(1, 2) == 3
    assert double.name == "double"
    assert not double.is_async and slow_add.is_async


def test_graph_wires_step_outputs_into_downstream_inputs() -> None:
    @pipeline
    def p(x: int, y: int = 3) -> int:
        return add(double(x), b=y)

    graph = p.graph
    assert [n.id for n in graph.nodes] == ["double", "add"]
    assert graph.nodes[0].inputs == {"x": Ref("param", "x")}
    assert graph.nodes[1].inputs == {"a": Ref("step", "double"), "b": Ref("param", "y")}
    assert graph.outputs == {"output": Ref("step", "add")}


def test_same_step_twice_gets_distinct_node_ids() -> None:
    @pipeline
    def p(x: int) -> int:
        return add(double(x), double(x))

    assert [n.id for n in p.graph.nodes] == ["double", "double_2", "add"]


def test_constants_are_bound_as_constants() -> None:
    @pipeline
    def p(x: int) -> int:
        return add(x, 10)

    assert p.graph.nodes[0].inputs["b"] == Ref("const", value=10)


@pipeline
def one(x: int) -> int:
    return double(x)


@pipeline
def two(x: int) -> tuple[int, int]:
    return double(x), add(x)


@pipeline
def named(x: int) -> dict[str, int]:
    return {"twice": double(x), "same": add(x)}


@pipeline
def nothing(x: int) -> None:
    double(x)


@pytest.mark.parametrize(
    ("pipe", "expected"),
    [
        (one, ["output"]),
        (two, ["output_0", "output_1"]),
        (named, ["twice", "same"]),
        (nothing, []),
    ],
)
def test_output_naming(pipe: Any, expected: list[str]) -> None:
    assert list(pipe.graph.outputs) == expected


def test_a_body_that_calls_no_step_is_one_implicit_step() -> None:
    @pipeline(settings={"capture": "none"})
    def fast(x: int) -> int:
        return x * 2

    assert [n.id for n in fast.graph.nodes] == ["fast"]
    assert fast.graph.outputs == {"output": Ref("step", "fast")}


def test_implicit_step_tuple_annotation_names_each_output() -> None:
    @pipeline
    def multi(x: int) -> tuple[int, str]:
        return x * 2, f"Result: {x}"

    assert multi.graph.outputs == {
        "output_0": Ref("step", "multi", index=0),
        "output_1": Ref("step", "multi", index=1),
    }


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("if double(x):\n        pass\n    return None", "cannot test the truth"),
        ("return f'{double(x)}'", "cannot format"),
        ("return double(x) + 1", "cannot apply '+'"),
        ("a, b = x\n    return add(a, b)", "cannot iterate"),
        ("a, b = double(x)\n    return a", "cannot unpack the output of step 'double'"),
        ("return double(x).real", "cannot read attribute .real"),
        ("return double(x)[0]", "cannot index"),
        ("return add([double(x)])", "inside a list"),
        ("return add(x, c=1)", "wrong arguments"),
    ],
)
def test_run_time_logic_in_the_body_is_a_definition_error_naming_the_line(
    source: str, fragment: str
) -> None:
    namespace: dict[str, Any] = {"double": double, "add": add}
    exec(f"def body(x: int):\n    {source}\n", namespace)
    p = pipeline(namespace["body"])
    with pytest.raises(PipelineDefinitionError) as info:
        _ = p.graph
    message = str(info.value)
    assert fragment in message
    assert "step" in message  # every message says where the logic belongs
    assert "<string>:" in message  # file:line of the offending body line


def test_async_pipeline_body_is_refused() -> None:
    @pipeline
    async def p(x: int) -> int:
        return double(x)

    with pytest.raises(PipelineDefinitionError, match="async def"):
        _ = p.graph


def test_unknown_setting_and_capture_mode_are_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match="unknown setting"):
        pipeline(settings={"captur": "none"})(lambda x: x)
    with pytest.raises(PipelineDefinitionError, match="unknown capture mode"):
        pipeline(settings={"capture": "everything"})(lambda x: x)


def test_parameter_schema_simple_form() -> None:
    @pipeline
    def weather(city: str, days: int = 1, temperature: float = 20.5) -> str:
        return double(days)  # type: ignore[return-value]

    assert parameter_schema(weather) == {
        "city": {"type": "str", "required": True},
        "days": {"type": "int", "required": False, "default": 1},
        "temperature": {"type": "float", "required": False, "default": 20.5},
    }


def test_node_ids_stay_unique_when_a_step_is_named_like_a_repeat() -> None:
    @step(name="double_2")
    def other(x: int) -> int:
        return -x

    @pipeline
    def p(x: int) -> dict[str, int]:
        return {"a": double(x), "b": other(x), "c": double(x)}

    assert [n.id for n in p.graph.nodes] == ["double", "double_2", "double_3"]
    assert p.graph.outputs["b"] == Ref("step", "double_2")


def test_positional_only_step_parameters_are_refused() -> None:
    @step
    def po(x: int, /) -> int:
        return x

    @pipeline
    def p(x: int) -> int:
        return po(x)

    with pytest.raises(PipelineDefinitionError, match="parameter 'x' must be an ordinary"):
        _ = p.graph
