"""`zserve stop` with several servers or none named, the error of a port another zserve server
holds, and the logs of stopped servers: pruned at start and by `zserve logs --prune`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Detached, cli

WEATHER = "zserve.examples.weather:weather_pipeline"


def running_ids() -> list[str]:
    return [s["id"] for s in json.loads(cli("ps", "--json").stdout)["servers"]]


def gone(doc: dict[str, Any]) -> bool:
    """The server and its workers have exited (a zombie waiting to be reaped counts)."""
    for pid in [doc["pid"], *doc["worker_pids"]]:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


@pytest.mark.slow
def test_stop_with_two_ids_stops_both_and_with_none_refuses_to_guess(detached: Detached) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    a = detached("--deployment", "weather")
    b = detached("--deployment", "weather", "--workers", "2")
    several = cli("stop", check=False)
    assert several.returncode == 2
    assert several.stderr.strip() == (
        "Error: 2 servers are running; name the ones to stop (id, port or deployment), or pass "
        f"--all: {a['server_id']} (weather:1 at {a['url']}); "
        f"{b['server_id']} (weather:1 at {b['url']})"
    )
    assert sorted(running_ids()) == sorted([a["server_id"], b["server_id"]])

    out = json.loads(cli("stop", a["server_id"], str(b["port"]), "--json").stdout)
    assert sorted((s["server_id"], s["graceful"]) for s in out["stopped"]) == sorted(
        [(a["server_id"], True), (b["server_id"], True)]
    )
    assert gone(a) and gone(b)
    assert running_ids() == []


def test_stop_without_an_id_stops_the_only_server(detached: Detached) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    doc = detached("--deployment", "weather")
    out = cli("stop").stdout
    assert out == f"Stopped server {doc['server_id']} (weather:1, {doc['url']}): drained\n"
    assert gone(doc) and running_ids() == []
    none = cli("stop", check=False)
    assert none.returncode == 3  # as for invoke: no server to reach
    assert none.stderr.strip() == "Error: No zserve server is running"


def test_a_port_held_by_a_zserve_server_names_it(detached: Detached) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    doc = detached("--deployment", "weather")
    busy = cli("start", "-d", "weather", "--port", str(doc["port"]), "--detach", check=False)
    assert busy.returncode == 3
    assert busy.stderr.strip() == (
        f"Error: Port {doc['port']} on 127.0.0.1 is in use by zserve server {doc['server_id']} "
        f"(deployment weather:1): stop it with `zserve stop {doc['server_id']}`, or pick a free "
        "port with --port 0"
    )
    foreground = cli("start", "-d", "weather", "--port", str(doc["port"]), check=False)
    assert foreground.returncode == 3
    assert foreground.stderr.strip() == busy.stderr.strip()
    assert running_ids() == [doc["server_id"]]


def test_logs_prune_deletes_the_logs_of_servers_not_running(
    zhome: Path, detached: Detached
) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    running = detached("--deployment", "weather")
    stopped = detached("--deployment", "weather")
    cli("stop", stopped["server_id"])
    failed = cli("start", "-d", "weather", "--port", str(running["port"]), "--detach", check=False)
    assert failed.returncode == 3  # a failed start leaves a log too
    logs = zhome / "logs"
    others = [p for p in logs.glob("*.log") if p.stem != running["server_id"]]
    assert len(others) == 2 and (logs / f"{stopped['server_id']}.log") in others
    size = sum(p.stat().st_size for p in others)

    out = cli("logs", "--prune").stdout
    assert out == f"Deleted 2 log(s) of servers not running ({size} bytes freed)\n"
    assert [p.name for p in logs.glob("*.log")] == [f"{running['server_id']}.log"]
    # with no server named, `logs` shows the only running server's
    assert "Application startup complete" in cli("logs").stdout
    assert (
        cli("logs", "--prune").stdout == "Deleted 0 log(s) of servers not running (0 bytes freed)\n"
    )
    misuse = cli("logs", running["server_id"], "--prune", check=False)
    assert misuse.returncode == 2 and "--prune takes no server" in misuse.stderr


def test_start_keeps_the_newest_20_logs_of_stopped_servers(zhome: Path, detached: Detached) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    logs = zhome / "logs"
    logs.mkdir(parents=True)
    for i in range(25):  # the logs of 25 servers stopped long ago, i minutes after each other
        old = logs / f"{i:08x}.log"
        old.write_text(f"server {i}\n")
        os.utime(old, (1_000_000 + 60 * i, 1_000_000 + 60 * i))
    doc = detached("--deployment", "weather")
    kept = sorted(p.stem for p in logs.glob("*.log"))
    assert kept == sorted([doc["server_id"], *(f"{i:08x}" for i in range(5, 25))])
