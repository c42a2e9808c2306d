from __future__ import annotations

import io
from pathlib import Path

import pytest

from zserve.cli._params import parse_params
from zserve.errors import UsageError

SCHEMA = {"city": {"type": "str"}, "days": {"type": "int"}, "tags": {"type": "list[str]"}}


def test_str_parameters_are_verbatim_others_are_json() -> None:
    params = parse_params(["city=42", "days=3", 'tags=["a","b"]', "extra=yes"], None, SCHEMA)
    assert params == {"city": "42", "days": 3, "tags": ["a", "b"], "extra": "yes"}


def test_a_value_may_contain_equals_signs() -> None:
    assert parse_params(["city=a=b"], None, SCHEMA) == {"city": "a=b"}


def test_params_json_then_params_on_top(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_params(["days=2"], '{"city": "Oslo", "days": 1}', SCHEMA) == {
        "city": "Oslo",
        "days": 2,
    }
    file = tmp_path / "p.json"
    file.write_text('{"city": "Rome"}')
    assert parse_params(None, f"@{file}", SCHEMA) == {"city": "Rome"}
    monkeypatch.setattr("sys.stdin", io.StringIO('{"city": "Lima"}'))
    assert parse_params(None, "@-", SCHEMA) == {"city": "Lima"}


@pytest.mark.parametrize(
    ("pairs", "params_json", "message"),
    [
        (["city"], None, "--param 'city' is not of the form name=value"),
        (["=x"], None, "is not of the form name=value"),
        (None, "{nope", "--params-json is not valid JSON"),
        (None, "[1]", "must be a JSON object"),
        (None, "@/no/such/file.json", "Cannot read /no/such/file.json"),
    ],
)
def test_bad_params(pairs: list[str] | None, params_json: str | None, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_params(pairs, params_json, SCHEMA)
