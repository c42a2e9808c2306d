"""Errors of `zserve invoke` in the command line's terms, against a real detached server: a
missing or mistyped parameter names its `--param` and its type, list and dict parameters get a
JSON hint, and nothing of pydantic's or typer's wording leaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Detached, cli

LISTER = """\
from zserve import pipeline, step


@step
def count(items: list[str], opts: dict[str, int], days: int) -> int:
    return len(items) + len(opts) + days


@pipeline
def lister(items: list[str], opts: dict[str, int], days: int = 1) -> int:
    return count(items, opts, days)
"""

HINT = ' (list and dict values are JSON: --param items=\'["a","b"]\')'


@pytest.fixture
def lister(detached: Detached, tmp_path: Path) -> None:
    source = tmp_path / "lister.py"
    source.write_text(LISTER)
    cli("deploy", f"{source}:lister", "--name", "lister")
    detached("--deployment", "lister")


@pytest.mark.parametrize("mode", [[], ["--async"], ["--stream"]])
def test_a_missing_parameter_names_its_param_option_and_type(lister: None, mode: list[str]) -> None:
    missing = cli("invoke", *mode, "-p", 'opts={"a": 1}', check=False)
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == ["Error: --param items (list[str]) is required" + HINT]
    assert missing.stdout == ""


def test_mistyped_and_unknown_parameters(lister: None) -> None:
    typed = cli("invoke", "-p", "items=a", "-p", "opts=x", "-p", "days=zz", check=False)
    assert typed.returncode == 2
    assert typed.stderr.splitlines() == [
        "Error: --param items (list[str]): Input should be a valid array; "
        "--param opts (dict[str, int]): Input should be an object; "
        "--param days (int): Input should be a valid integer" + HINT
    ]
    extra = cli("invoke", "-p", 'items=["a"]', "-p", 'opts={"a": 1}', "-p", "nope=1", check=False)
    assert extra.returncode == 2
    assert extra.stderr.splitlines() == [
        "Error: --param nope is not a parameter of this pipeline (its parameters: items, "
        "opts, days)"
    ]
    # --json: the server's problem document on stdout, the same one line on stderr
    as_json = cli("invoke", "-p", 'opts={"a": 1}', "--json", check=False)
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["errors"] == [
        {"loc": ["parameters", "items"], "msg": "Field required"}
    ]
    assert as_json.stderr.splitlines() == ["Error: --param items (list[str]) is required" + HINT]
    ok = cli("invoke", "-p", 'items=["a","b"]', "-p", 'opts={"a": 1}', "-p", "days=3")
    assert ok.stdout == "6\n"
