"""Taking a step's several outputs apart in the pipeline body: ``a, b = split(x)``, ``x[0]``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.unpacking_pipelines import (
    graph_unpacking,
    linear_unpacking,
    named_tuple_unpacking,
    split,
)
from zserve import pipeline, step
from zserve.errors import PipelineDefinitionError, UsageError
from zserve.sdk.tracing import Ref


def test_unpacked_items_are_step_inputs_and_pipeline_outputs() -> None:
    graph = linear_unpacking.graph
    nodes = {n.id: n for n in graph.nodes}
    assert list(nodes) == ["split", "shout", "repeat"]
    assert nodes["shout"].inputs == {"word": Ref("step", "split", index=0)}
    assert nodes["repeat"].inputs == {
        "word": Ref("step", "shout"),
        "times": Ref("step", "split", index=1),
    }
    assert graph.outputs == {
        "output_0": Ref("step", "repeat"),
        "output_1": Ref("step", "split", index=1),
    }
    # only the step taken apart has its number of values checked at run time
    assert [n.arity for n in graph.nodes] == [2, None, None]


def test_indexing_reads_one_item_and_the_whole_output_stays_usable() -> None:
    graph = graph_unpacking.graph
    nodes = {n.id: n for n in graph.nodes}
    assert nodes["repeat"].inputs == {
        "word": Ref("step", "split", index=0),
        "times": Ref("step", "split", index=1),  # parts[-1]
    }
    assert graph.outputs["parts"] == Ref("step", "split")
    assert Ref("step", "split", index=1).to_dict() == {"kind": "step", "name": "split", "index": 1}


def test_a_named_tuple_return_unpacks_into_its_fields() -> None:
    graph = named_tuple_unpacking.graph
    assert graph.outputs == {
        "output_0": Ref("step", "halves", index=0),
        "output_1": Ref("step", "halves", index=1),
        "output_2": Ref("step", "product"),
    }
    assert graph.nodes[0].arity == 2


def test_an_inlined_pipeline_passes_items_through() -> None:
    @pipeline
    def inner(text: str) -> tuple[str, int]:
        word, count = split(text)
        return word, count

    @pipeline
    def outer(text: str) -> int:
        _, count = inner(text)
        return count

    assert outer.graph.outputs == {"output": Ref("step", "split", index=1)}


def test_a_starred_target_takes_the_rest() -> None:
    @pipeline
    def p(text: str) -> str:
        word, *_ = split(text)
        return word

    assert p.graph.outputs == {"output": Ref("step", "split", index=0)}


def test_outside_a_pipeline_the_step_returns_its_tuple() -> None:
    word, count = split("a b c")
    assert (word, count) == ("a", 2)


@step
def bare(text):  # type: ignore[no-untyped-def]
    return text, 1


@step
def listed(text: str) -> list[str]:
    return [text]


@step
def open_ended(text: str) -> tuple[str, ...]:
    return (text,)


@step
def words(text: str) -> Iterator[str]:
    yield from text.split()


STEPS = {"split": split, "bare": bare, "listed": listed, "open_ended": open_ended, "words": words}
ANNOTATE = "Annotate the step '-> tuple[A, B]' (one type per value)"


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ("a, b = bare(x)", ["cannot unpack the output of step 'bare'", "not annotated", ANNOTATE]),
        ("a = bare(x)[0]", ["cannot index the output of step 'bare'", ANNOTATE]),
        ("a, b = listed(x)", ["its return type list[str] is not a fixed-length tuple", ANNOTATE]),
        ("a, b = open_ended(x)", ["tuple[str, ...] is not a fixed-length tuple", ANNOTATE]),
        ("a, b = words(x)", ["'words': it is a generator step", ANNOTATE]),
        ("a, b, c = split(x)", ["step 'split' returns 2 values", "unpacks its output into 3"]),
        ("(a,) = split(x)", ["step 'split' returns 2 values", "into 1 names; unpack it into 2"]),
        ("a, b, c, *d = split(x)", ["step 'split' returns 2 values", "into 3 names"]),
        ("a = split(x)[2]", ["step 'split' returns 2 values", "from 0 to 1 (or -2 to -1), not 2"]),
        ("a = split(x)['w']", ["index its output with a number", "not 'w'"]),
        ("a = split(x)[0:1]", ["index its output with a number", "not slice(0, 1, None)"]),
        ("a = split(x)[x]", ["index its output with a number", "not parameter 'x'"]),
        ("a = split(x)[0][0]", ["cannot index item 0 of the output of step 'split'"]),
        ("a, b = split(x)\n    a = a + 1", ["cannot apply '+' to item 0 of the output"]),
        ("a, b = split(x)\n    a, b = b", ["cannot iterate over or unpack item 1 of the output"]),
    ],
)
def test_taking_apart_what_has_no_fixed_length_is_a_definition_error(
    source: str, fragments: list[str]
) -> None:
    namespace: dict[str, Any] = dict(STEPS)
    exec(f"def body(x: str):\n    {source}\n    return None\n", namespace)
    p = pipeline(namespace["body"])
    with pytest.raises(PipelineDefinitionError) as info:
        _ = p.graph
    message = str(info.value)
    assert isinstance(info.value, UsageError)  # exit code 2 / a 400, never a TypeError
    assert message.startswith("<string>:") and " in pipeline 'body': " in message
    for fragment in fragments:
        assert fragment in message


def test_an_annotation_that_cannot_be_evaluated_says_where_to_define_its_names() -> None:
    class Local(tuple):  # type: ignore[type-arg]
        pass

    @step
    def local(text: str) -> Local:
        return Local((text, 1))

    @pipeline
    def p(text: str) -> str:
        a, _b = local(text)
        return a  # type: ignore[no-any-return]

    with pytest.raises(PipelineDefinitionError, match=r"cannot be evaluated .* at module level"):
        _ = p.graph
