from __future__ import annotations

import pytest

from zserve import pipeline
from zserve.engine.plan import compile_plan
from zserve.errors import PipelineDefinitionError


class Thing:
    pass


def test_a_parameter_type_that_json_cannot_carry_is_a_definition_error() -> None:
    @pipeline
    def p(t: Thing) -> int:
        return 1

    with pytest.raises(PipelineDefinitionError, match="parameter 't' has type Thing"):
        compile_plan(p)


@pytest.mark.parametrize("name", ["_private", "model_config"])
def test_parameter_names_pydantic_reserves_are_refused(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"def body({name}: int = 1) -> int:\n    return {name}\n", namespace)
    with pytest.raises(PipelineDefinitionError, match=f"parameter '{name}' cannot be a request"):
        compile_plan(pipeline(namespace["body"]))  # type: ignore[arg-type]
