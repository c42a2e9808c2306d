"""``zserve deploy`` and ``zserve deployments``, through Typer's CliRunner on real SQLite files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zserve.cli import app
from zserve.store import Store

WEATHER = "zserve.examples.weather:weather_pipeline"
runner = CliRunner()


def zserve(*args: str) -> Any:
    return runner.invoke(app, list(args))


def store(home: Path) -> Store:
    return Store(f"sqlite:///{home}/zserve.db")


def test_deploy_prints_the_id_and_stores_the_compiled_pipeline(zhome: Path) -> None:
    result = zserve("deploy", WEATHER)
    assert result.exit_code == 0, result.output
    assert "Deployed weather_pipeline:1" in result.stdout
    with store(zhome) as s:
        (record,) = s.list_deployments()
    assert f"id: {record.id}" in result.stdout
    assert record.source == WEATHER
    assert record.spec["parameters"]["city"] == {"type": "str", "required": True}
    assert [st["name"] for st in record.spec["steps"]] == ["fetch_data", "analyze_data"]
    assert record.capture_default == "none"
    assert record.settings == {"capture": "none"}
    weather_file = str(Path(__file__).resolve().parents[2] / "zserve/examples/weather.py")
    assert list(record.file_hashes) == [weather_file]


def test_redeploy_identical_returns_the_same_version_and_a_change_adds_one(
    zhome: Path, tmp_path: Path
) -> None:
    flow = tmp_path / "flow.py"
    flow.write_text(
        "from zserve import pipeline\n\n@pipeline\ndef flow(x: int) -> int:\n    return x + 1\n"
    )
    first = json.loads(zserve("deploy", f"{flow}:flow", "--name", "f", "--json").stdout)
    again = json.loads(zserve("deploy", f"{flow}:flow", "--name", "f", "--json").stdout)
    assert first["json_version"] == 1
    assert first["created"] is True and again["created"] is False
    assert again["deployment"]["id"] == first["deployment"]["id"]
    flow.write_text(flow.read_text().replace("x + 1", "x + 2"))
    changed = json.loads(zserve("deploy", f"{flow}:flow", "--name", "f", "--json").stdout)
    assert changed["created"] is True
    assert changed["deployment"]["version"] == 2


def test_list_show_delete(zhome: Path) -> None:
    assert "No deployments yet" in zserve("deployments", "list").stdout
    dep = json.loads(zserve("deploy", WEATHER, "--name", "w", "--json").stdout)["deployment"]
    zserve("deploy", "zserve.examples.multi_output:multi_output_pipeline", "--name", "m")

    listing = json.loads(zserve("deployments", "list", "--json").stdout)
    assert [d["name"] for d in listing["deployments"]] == ["m", "w"]
    table = zserve("deployments", "list").stdout
    assert dep["id"][:8] in table and WEATHER in table

    for ref in (dep["id"], dep["id"][:8], "w", "w:1"):
        shown = zserve("deployments", "show", ref, "--json")
        assert json.loads(shown.stdout)["deployment"]["id"] == dep["id"], ref
    text = zserve("deployments", "show", "w").stdout
    assert "city: str (required)" in text and "days: int (default 1)" in text
    assert "analyze_data [sync-on-loop] after fetch_data" in text

    brokers = zhome / "brokers"  # its jobs, kept between servers, go with it
    brokers.mkdir()
    for suffix in ("", "-wal"):
        (brokers / f"{dep['id']}.db{suffix}").write_bytes(b"jobs")
    (brokers / "other.db").write_bytes(b"jobs")
    deleted = json.loads(zserve("deployments", "delete", "w", "--json").stdout)
    assert [d["id"] for d in deleted["deleted"]] == [dep["id"]]
    assert [p.name for p in brokers.iterdir()] == ["other.db"]
    assert [
        d["name"] for d in json.loads(zserve("deployments", "list", "--json").stdout)["deployments"]
    ] == ["m"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("deployments", "show", "nope"), "Error: No deployment matches 'nope'"),
        (("deployments", "show", "w:9"), "Error:"),
        (("deployments", "delete", "nope"), "Error: No deployment matches 'nope'"),
        (("deploy", "no_such_mod_zz:p"), "Error: No module named 'no_such_mod_zz'"),
        (("deploy", "zserve.examples.weather:fetch_data"), "is a Step, not a pipeline"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    zhome: Path, args: tuple[str, ...], message: str
) -> None:
    zserve("deploy", WEATHER, "--name", "w")
    result = zserve(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_prefix_shorter_than_8_characters_is_not_an_id(zhome: Path) -> None:
    dep = json.loads(zserve("deploy", WEATHER, "--json").stdout)["deployment"]
    result = zserve("deployments", "show", dep["id"][:7])
    assert result.exit_code == 2
    assert "No deployment matches" in result.stderr
    assert zserve("deployments", "show", dep["id"][:8]).exit_code == 0


def test_a_source_that_fails_to_import_shows_the_error_and_leaves_the_store_unchanged(
    zhome: Path, tmp_path: Path
) -> None:
    zserve("deploy", WEATHER)
    broken = tmp_path / "broken.py"
    broken.write_text("from zserve import pipeline\n\nraise ImportError('cannot find libfoo')\n")
    result = zserve("deploy", f"{broken}:p")
    assert result.exit_code == 2
    assert "ImportError: cannot find libfoo" in result.stderr
    assert f"{broken}:3" in result.stderr
    with store(zhome) as s:
        assert [r.name for r in s.list_deployments()] == ["weather_pipeline"]


def test_a_pipeline_with_run_time_logic_in_its_body_is_refused(zhome: Path, tmp_path: Path) -> None:
    flow = tmp_path / "bad.py"
    flow.write_text(
        "from zserve import pipeline, step\n\n@step\ndef one(x: int) -> int:\n    return x\n\n"
        "@pipeline\ndef bad(x: int) -> int:\n    if one(x):\n        return 1\n    return 0\n"
    )
    result = zserve("deploy", f"{flow}:bad")
    assert result.exit_code == 2
    assert f"{flow}:9" in result.stderr and "Move this into a step" in result.stderr
    with store(zhome) as s:
        assert s.list_deployments() == []


def test_version_and_help() -> None:
    from zserve import __version__

    assert zserve("--version").stdout.strip() == f"zserve {__version__}"
    assert "deploy" in zserve("--help").stdout


def test_prints_at_import_do_not_spoil_json_output(zhome: Path, tmp_path: Path) -> None:
    flow = tmp_path / "noisy.py"
    flow.write_text(
        "from zserve import pipeline\nprint('hello from import')\n\n"
        "@pipeline\ndef noisy(x: int) -> int:\n    return x\n"
    )
    result = zserve("deploy", f"{flow}:noisy", "--json")
    assert json.loads(result.stdout)["deployment"]["name"] == "noisy"
    assert "hello from import" in result.stderr


def test_a_relative_file_source_is_relative_to_the_working_directory(
    zhome: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "p.py").write_text(
        "from zserve import pipeline\n\n@pipeline\ndef p(x: int) -> int:\n    return x\n"
    )
    monkeypatch.chdir(tmp_path)
    result = zserve("deploy", "src/p.py:p", "--app-dir", "src", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["deployment"]["source"] == f"{tmp_path}/src/p.py:p"


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("foo://x", 2, "The store URL 'foo://x' is not usable"),
        (
            "postgresql+psycopg://u:pw@127.0.0.1:9/db",
            3,
            "Cannot open the store at postgresql+psycopg://u:***@127.0.0.1:9/db",
        ),
    ],
)
def test_an_unusable_store_is_one_error_line(
    zhome: Path, monkeypatch: pytest.MonkeyPatch, url: str, code: int, message: str
) -> None:
    monkeypatch.setenv("ZSERVE_STORE_URL", url)
    result = zserve("deployments", "list")
    assert result.exit_code == code
    assert result.stderr.startswith(f"Error: {message}")
    assert result.stderr.count("\n") == 1


def test_an_unknown_capture_mode_is_a_usage_error(zhome: Path) -> None:
    result = zserve("deploy", WEATHER, "--capture", "lots")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("Error: Invalid value for '--capture'")
    assert "errors_only" in result.stderr
