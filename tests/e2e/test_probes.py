"""Hosts, on real server processes: ``zserve start --host-id`` names the host in ``/status``,
the probes and ``zserve ps --json``; ``/livez`` stays 200 and ``/readyz`` turns 503 while a
SIGTERM drains a running job; a PostgreSQL store upgraded by ``zserve db upgrade`` is served,
and ``/status`` shows it reachable."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Detached, Serve, ServerProcess, cli, wait_for, wait_status
from tests.e2e.tracking_helpers import POSTGRES_ADMIN, POSTGRES_URL_ENV
from tests.store.store_backends import postgres_database
from zserve.settings import hide_password

WEATHER = "zserve.examples.weather:weather_pipeline"
GATED = "tests.server.pipelines:gated"


def test_start_host_id_names_the_host_everywhere(
    zhome: Path, deployed: Any, detached: Detached
) -> None:
    deployed(WEATHER, "--name", "weather")
    named = detached("--deployment", "weather", "--host-id", "web-a")
    unnamed = detached("--deployment", "weather")
    status = httpx.get(named["url"] + "/status").json()
    assert status["host_id"] == "web-a"
    assert status["broker"] == {
        "kind": "memory", "url": "memory://", "reachable": True, "problem": None,
    }  # fmt: skip
    assert status["store"] == {
        "kind": "sqlite", "url": f"sqlite:///{zhome}/zserve.db", "reachable": True,
        "problem": None,
    }  # fmt: skip
    assert httpx.get(named["url"] + "/livez").json() == {
        "status": "alive", "host_id": "web-a", "pid": named["pid"],
    }  # fmt: skip
    assert httpx.get(named["url"] + "/readyz").json() == {"status": "ready", "host_id": "web-a"}
    # without --host-id: this machine's name and the port it was given (--port 0 picks it)
    default = f"{socket.gethostname()}:{unnamed['port']}"
    assert httpx.get(unnamed["url"] + "/status").json()["host_id"] == default
    listed = {s["id"]: s["host_id"] for s in json.loads(cli("ps", "--json").stdout)["servers"]}
    assert listed == {named["server_id"]: "web-a", unnamed["server_id"]: default}


def test_an_invalid_host_id_is_a_usage_error(deployed: Any) -> None:
    deployed(WEATHER, "--name", "weather")
    result = cli("start", "--deployment", "weather", "--host-id", "web a", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: Invalid host id 'web a' (ZSERVE_HOST_ID)")


def test_a_draining_host_is_alive_and_not_ready(serve: Serve, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = serve(GATED, ZSERVE_GRACE_S="60", ZSERVE_HOST_ID="draining-1")
    with server.client() as client:
        body = {"parameters": {"gate": str(gate)}}
        job = client.post("/invoke?mode=async", json=body).json()
        wait_status(server.url, job["job_id"], "running")
        server.proc.send_signal(signal.SIGTERM)  # the job holds the drain until the gate opens
        ready = wait_for(
            lambda: (r := client.get("/readyz")).status_code == 503 and r, "a 503 /readyz"
        )
        assert ready.json() == {"status": "draining", "host_id": "draining-1"}
        live = client.get("/livez")
        assert live.status_code == 200 and live.json()["status"] == "alive"
        assert client.get("/health").json()["status"] == "draining"
        assert client.get(f"/jobs/{job['job_id']}").json()["status"] == "running"
    gate.touch()
    assert server.proc.wait(60) == 0


@pytest.mark.postgresql
@pytest.mark.skipif(not POSTGRES_ADMIN, reason=f"{POSTGRES_URL_ENV} is not set: scripts/test")
def test_a_store_upgraded_by_db_upgrade_is_served_and_reachable(
    zhome: Path, servers: Callable[..., ServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert POSTGRES_ADMIN is not None
    with postgres_database(POSTGRES_ADMIN) as url:
        monkeypatch.setenv("ZSERVE_STORE_URL", url)
        upgraded = json.loads(cli("db", "upgrade", "--json", env={**os.environ}).stdout)
        assert (upgraded["before"], upgraded["upgraded"]) == (None, True)
        deployment = json.loads(
            cli("deploy", WEATHER, "--json", env={**os.environ}).stdout
        )["deployment"]  # fmt: skip
        server = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"]})
        try:
            status = httpx.get(server.url + "/status").json()
            assert status["store"] == {
                "kind": "postgresql", "url": hide_password(url), "reachable": True,
                "problem": None,
            }  # fmt: skip
            assert ":***@" in status["store"]["url"]
            current = json.loads(cli("db", "current", "--json", env={**os.environ}).stdout)
            assert current["revision"] == upgraded["after"] and current["at_head"] is True
        finally:
            assert server.stop() == 0  # before the database is dropped
