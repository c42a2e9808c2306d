"""The CLI driving real servers: start --detach, ps, invoke, logs, stop, run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import (
    Detached,
    Running,
    cli,
    forget_snapshot,
    fresh,
    taken_port,
    wait_for,
)

WEATHER = "zserve.examples.weather:weather_pipeline"


def ps() -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = json.loads(cli("ps", "--json").stdout)["servers"]
    return servers


@pytest.mark.parametrize("workers", [1, 2])
def test_start_detached_then_ps_invoke_logs_and_stop(detached: Detached, workers: int) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    doc = detached("--deployment", "weather", "--workers", str(workers))
    assert doc["url"] == f"http://127.0.0.1:{doc['port']}"
    assert len(doc["worker_pids"]) == workers
    assert doc["deployment"] == "weather:1"

    (row,) = ps()
    assert row["id"] == doc["server_id"] and row["status"] == "healthy"
    assert row["workers"] == workers
    assert sorted(p["pid"] for p in row["processes"] if p["role"] == "worker") == sorted(
        doc["worker_pids"]
    )
    assert row["memory_bytes"] > 0 and row["cpu_percent"] >= 0
    assert "weather:1" in cli("ps").stdout

    # through the CLI (--param coerced by the schema: days=3 is an int) and through plain HTTP
    out = cli("invoke", "--param", "city=Paris", "--param", "days=3").stdout
    assert out.strip().startswith("Analysis for Paris over 3 day(s)")
    raw = json.loads(
        cli("invoke", "--server", doc["server_id"], "-p", "city=Rome", "--json").stdout
    )
    assert raw["success"] is True and raw["outputs"]["output"].startswith("Analysis for Rome")
    response = httpx.post(f"{doc['url']}/invoke", json={"parameters": {"city": "Oslo"}})
    assert response.status_code == 200

    assert "Application startup complete" in cli("logs", doc["server_id"]).stdout

    stopped = json.loads(cli("stop", doc["server_id"], "--json").stdout)["stopped"]
    assert stopped[0]["server_id"] == doc["server_id"] and stopped[0]["graceful"] is True
    assert ps() == []
    for pid in [doc["pid"], *doc["worker_pids"]]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    # the log outlives the server
    assert "Finished server process" in cli("logs", doc["server_id"]).stdout


def test_a_killed_worker_is_replaced_and_the_server_keeps_serving(
    started: list[dict[str, Any]], detached: Detached
) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    doc = detached("--deployment", "weather", "--workers", "2")
    victim = doc["worker_pids"][0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> list[int] | None:
        (row,) = ps()
        workers = [p["pid"] for p in row["processes"] if p["role"] == "worker"]
        return workers if len(workers) == 2 and victim not in workers else None

    workers = wait_for(replaced, "a worker in place of the killed one", 60, every=0.2)
    assert len(workers) == 2 and victim not in workers, workers
    started[0]["worker_pids"] = workers
    for i in range(20):  # new connections: both workers answer
        response = fresh(doc["url"], "POST", "/invoke", json={"parameters": {"city": f"c{i}"}})
        assert response.status_code == 200


def test_invoke_exit_codes(detached: Detached) -> None:
    cli("deploy", "zserve.examples.failing:failing_pipeline", "--name", "failing")
    detached("--deployment", "failing")
    failed = cli("invoke", "-p", "value=2", check=False)
    assert failed.returncode == 1
    assert (
        failed.stderr.strip() == "Error: Step 'explode' raised ValueError: cannot process value 2"
    )
    invalid = cli("invoke", "-p", "value=x", "-p", "other=1", check=False)
    assert invalid.returncode == 2
    assert invalid.stderr.splitlines() == [
        "Error: --param value (int): Input should be a valid integer; --param other is not a "
        "parameter of this pipeline (its parameters: value)"
    ]
    as_json = cli("invoke", "-p", "value=2", "--json", check=False)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["step"] == "explode"  # the problem document, unchanged
    unreachable = cli("invoke", "--url", "http://127.0.0.1:9", check=False)
    assert unreachable.returncode == 3
    assert "No zserve server answers at http://127.0.0.1:9" in unreachable.stderr


def test_no_server_and_several_servers_are_clear_errors(detached: Detached) -> None:
    none = cli("invoke", check=False)
    assert none.returncode == 3 and "No zserve server is running" in none.stderr
    cli("deploy", WEATHER, "--name", "a")
    cli("deploy", "zserve.examples.multi_output:multi_output_pipeline", "--name", "b")
    a = detached("--deployment", "a")
    b = detached("--deployment", "b")
    several = cli("invoke", "-p", "x=1", check=False)
    assert several.returncode == 2
    assert a["server_id"] in several.stderr and b["server_id"] in several.stderr
    out = cli("invoke", "--deployment", "b", "-p", "x=4").stdout
    assert out == "output_0: 8\noutput_1: Result: 4\n"
    by_port = cli("invoke", "--server", str(a["port"]), "-p", "city=Lyon").stdout
    assert "Lyon" in by_port
    env = {**os.environ, "ZSERVE_URL": b["url"]}
    assert "output_0: 2" in cli("invoke", "-p", "x=1", env=env).stdout


def test_start_failures_carry_the_servers_own_error(
    started: list[dict[str, Any]], zhome: Path, tmp_path: Path
) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    with taken_port() as port:
        busy = cli("start", "-d", "weather", "--port", str(port), "--detach", check=False)
    assert busy.returncode == 3
    assert busy.stderr.strip() == (
        f"Error: Port {port} on 127.0.0.1 is in use by another program (not a zserve server of "
        "this ZSERVE_HOME): stop it, or pick a free port with --port 0"
    )
    unknown = cli("start", "-d", "nope", "--detach", check=False)
    assert unknown.returncode == 2 and "No deployment matches 'nope'" in unknown.stderr

    flow = tmp_path / "flow.py"
    flow.write_text(
        "from zserve import pipeline\n\n@pipeline\ndef flow(x: int) -> int:\n    return x\n"
    )
    made = json.loads(cli("deploy", f"{flow}:flow", "--json").stdout)["deployment"]
    forget_snapshot(zhome, made["id"])  # made before snapshots: served from its source path
    flow.write_text(flow.read_text() + "\n# edited\n")
    changed = cli("start", "-d", "flow", "--port", "0", "--detach", check=False)
    assert changed.returncode == 3
    assert f"{flow} changed since deployment flow:1 was made: redeploy" in changed.stderr
    assert ps() == []


def test_foreground_start_serves_until_ctrl_c_then_exits_0(
    zhome: Path, running: Callable[..., Running]
) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    server = running("start", "-d", "weather", "--port", "0")
    rows = wait_for(
        lambda: [r for r in ps() if r["status"] == "healthy"],
        "the foreground server in `zserve ps`",
        60,
        every=0.1,
    )
    assert rows, "the foreground server never showed up in `zserve ps`"
    assert rows[0]["pid"] == server.proc.pid and rows[0]["log_file"] is None
    response = httpx.post(rows[0]["url"] + "/invoke", json={"parameters": {"city": "x"}})
    assert response.status_code == 200
    server.proc.send_signal(signal.SIGINT)
    code, stderr = server.finish()
    assert code == 0, stderr
    assert ps() == []


def test_run_in_process(zhome: Path, tmp_path: Path) -> None:
    assert cli("run", WEATHER, "-p", "city=Nice").stdout.startswith("Analysis for Nice")
    cli("deploy", "zserve.examples.multi_output:multi_output_pipeline", "--name", "m")
    assert cli("run", "m", "-p", "x=2").stdout == "output_0: 4\noutput_1: Result: 2\n"
    assert cli("run", "m:1", "-p", "x=3").stdout.startswith("output_0: 6")
    doc = json.loads(cli("run", "m", "-p", "x=1", "--json").stdout)
    assert doc["success"] is True and doc["outputs"] == {"output_0": 2, "output_1": "Result: 1"}

    failed = cli("run", "zserve.examples.failing:failing_pipeline", "--traceback", check=False)
    assert failed.returncode == 1
    assert "Traceback" in failed.stderr and failed.stderr.strip().endswith(
        "Error: Step 'explode' raised ValueError: cannot process value 1"
    )
    problem = json.loads(
        cli("run", "zserve.examples.failing:failing_pipeline", "--json", check=False).stdout
    )
    assert problem["status"] == 500 and problem["step"] == "explode"
    invalid = cli("run", WEATHER, "-p", "days=many", check=False)
    assert invalid.returncode == 2
    assert invalid.stderr.splitlines() == [
        "Error: --param city (str) is required; --param days (int): Input should be a valid integer"
    ]
    slow = cli(
        "run",
        "zserve.examples.slow:slow_pipeline",
        "-p",
        "delay=5",
        "--timeout",
        "0.1",
        check=False,
    )
    assert slow.returncode == 1 and "did not finish within 0.1 s" in slow.stderr


def test_invoke_loads_no_server_or_database_code(detached: Detached) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    doc = detached("--deployment", "weather")
    probe = (
        "import sys, json\nfrom zserve.cli import app\n"
        f"try:\n    app(['invoke', '--url', '{doc['url']}', '-p', 'city=x'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = {m.split(".")[0] for m in json.loads(out.strip().splitlines()[-1])}
    # (pydantic is loaded by typer itself, so it is not on this list)
    assert not loaded & {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic"}


def test_an_open_address_without_a_key_warns(started: list[dict[str, Any]]) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    proc = cli("start", "-d", "weather", "--host", "0.0.0.0", "--port", "0", "--detach", "--json")
    started.append(json.loads(proc.stdout))
    assert proc.stderr.startswith("Warning: listening on 0.0.0.0 without an auth key")
    env = {**os.environ, "ZSERVE_AUTH_KEY": "k"}
    keyed = cli(
        "start", "-d", "weather", "--host", "0.0.0.0", "--port", "0", "--detach", "--json", env=env
    )
    started.append(json.loads(keyed.stdout))
    assert "Warning" not in keyed.stderr
