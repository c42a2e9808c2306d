from __future__ import annotations

import sys
from pathlib import Path

import pytest

from zserve.errors import SourceError
from zserve.sdk.loader import file_hashes, load_pipeline, split_source


def test_loads_by_module_and_attribute() -> None:
    loaded = load_pipeline("zserve.examples.weather:weather_pipeline")
    assert loaded.pipeline.name == "weather_pipeline"
    assert loaded.source == "zserve.examples.weather:weather_pipeline"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


PIPE = """
from zserve import pipeline, step

@step
def inc(x: int) -> int:
    return x + 1

@pipeline
def my_pipe(x: int) -> int:
    return inc(x)

not_a_pipeline = 42

def plain(x):
    return x
"""


def test_loads_by_file_path_relative_to_the_import_root(tmp_path: Path) -> None:
    _write(tmp_path / "flow.py", PIPE)
    loaded = load_pipeline("flow.py:my_pipe", str(tmp_path))
    assert loaded.pipeline.name == "my_pipe"
    assert loaded.source == f"{tmp_path / 'flow.py'}:my_pipe"
    assert loaded.import_root == str(tmp_path)
    hashes = file_hashes(loaded.pipeline)
    assert list(hashes) == [str(tmp_path / "flow.py")]


def test_loads_a_module_from_the_import_root(tmp_path: Path) -> None:
    _write(tmp_path / "flowmod_a1.py", PIPE)
    try:
        loaded = load_pipeline("flowmod_a1:my_pipe", str(tmp_path))
        assert loaded.pipeline.name == "my_pipe"
    finally:
        sys.modules.pop("flowmod_a1", None)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("no_such_module_xyz:pipe", "No module named 'no_such_module_xyz'"),
        (
            "zserve.examples.weather:nope",
            "has no attribute 'nope'; pipelines it defines: weather_pipeline",
        ),
        ("zserve.examples.weather:fetch_data", "is a Step, not a pipeline"),
        ("zserve.examples.weather", "is not of the form"),
        ("missing_file.py:p", "No such file"),
    ],
)
def test_clear_errors(source: str, message: str) -> None:
    with pytest.raises(SourceError) as info:
        load_pipeline(source)
    assert message in str(info.value)


def test_not_a_pipeline_says_how_to_fix_it(tmp_path: Path) -> None:
    _write(tmp_path / "flow2.py", PIPE)
    with pytest.raises(SourceError, match="is a function, not a pipeline: decorate it"):
        load_pipeline("flow2.py:plain", str(tmp_path))
    with pytest.raises(SourceError, match="is a int, not a pipeline"):
        load_pipeline("flow2.py:not_a_pipeline", str(tmp_path))


def test_an_import_that_fails_shows_the_error_and_where(tmp_path: Path) -> None:
    _write(tmp_path / "broken.py", "import json\nraise RuntimeError('boom at import')\n")
    with pytest.raises(SourceError) as info:
        load_pipeline("broken.py:p", str(tmp_path))
    message = str(info.value)
    assert "RuntimeError: boom at import" in message
    assert "broken.py:2" in message


def test_a_missing_dependency_inside_the_module_is_not_reported_as_the_module(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "needs_dep_q7.py", "import not_installed_pkg_q7\n")
    try:
        with pytest.raises(SourceError) as info:
            load_pipeline("needs_dep_q7:p", str(tmp_path))
    finally:
        sys.modules.pop("needs_dep_q7", None)
    assert "ModuleNotFoundError" in str(info.value)
    assert "not_installed_pkg_q7" in str(info.value)


def test_split_source() -> None:
    assert split_source("a.b:c") == ("a.b", "c")
    assert split_source("dir/file.py:p") == ("dir/file.py", "p")
    with pytest.raises(SourceError):
        split_source(":p")
