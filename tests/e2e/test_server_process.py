"""Real server processes (``python -m zserve.server.app``) on free ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import Serve, cli, forget_snapshot, taken_port

WEATHER = "zserve.examples.weather:weather_pipeline"


def test_spec_quickstart_with_zenml_names(deployed: Any, servers: Any) -> None:
    deployment = deployed(WEATHER)
    server = servers(
        {
            "ZENML_PIPELINE_DEPLOYMENT_ID": deployment["id"],
            "ZENML_SERVICE_HOST": "127.0.0.1",
            "ZENML_SERVICE_PORT": "0",
            "ZENML_LOG_LEVEL": "warning",
        }
    )
    with server.client() as client:
        health = client.get("/health").json()
        assert health["status"] == "healthy"
        assert health["deployment_id"] == deployment["id"]
        response = client.post(
            "/invoke",
            headers={"Content-Type": "application/json"},
            content='{"parameters": {"city": "Paris"}}',
        )
        assert response.status_code == 200
        assert response.json()["outputs"]["output"].startswith("Analysis for Paris")
        assert client.get("/info").json()["deployment"]["id"] == deployment["id"]
        metrics = client.get("/metrics").json()
        assert metrics["invocations"]["by_status"]["completed"] == 1
        assert metrics["latency_ms"]["count"] == 1
    assert server.stop() == 0


@pytest.mark.anyio
async def test_two_hundred_concurrent_requests_each_get_their_own_answer(serve: Serve) -> None:
    server = serve("zserve.examples.fanout:fanout_pipeline", ZSERVE_LOG_LEVEL="warning")
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(
                client.post("/invoke", json={"parameters": {"n": i, "delay": 0.05}})
                for i in range(200)
            )
        )
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["result"] == {
            "left": i + 1,
            "right": i * 10,
            "sum": i + 1 + i * 10,
        }
    assert len({r.json()["job_id"] for r in responses}) == 200


def test_metrics_add_up_across_two_workers(serve: Serve) -> None:
    server = serve(WEATHER, workers=2, ZSERVE_LOG_LEVEL="warning")
    pids = set()
    total = 60
    for i in range(total):
        # a new connection each time, so the kernel spreads them over both workers
        with httpx.Client(base_url=server.url, timeout=30) as client:
            body: dict[str, Any] = {"parameters": {"city": f"c{i}"}}
            if i % 10 == 0:
                body = {"parameters": {}}  # invalid: counted as such
            client.post("/invoke", json=body)
            pids.add(client.get("/status").json()["pid"])
    assert len(pids) == 2, "both workers should have answered"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(4):  # whichever worker answers, the numbers are the same
            doc = client.get("/metrics").json()
            assert doc["invocations"]["by_status"]["completed"] == total - 6
            assert doc["invocations"]["by_status"]["invalid"] == 6
            assert doc["latency_ms"]["count"] == total - 6
        text = client.get("/metrics?format=prometheus").text
        assert (
            f'zserve_invocations_total{{capture="none",status="completed"}} {total - 6}.0' in text
        )
    assert server.stop() == 0


def test_port_in_use_is_a_clear_error(deployed: Any, servers: Any) -> None:
    deployment = deployed(WEATHER)
    with taken_port() as port:
        server = servers(
            {"ZSERVE_DEPLOYMENT_ID": deployment["id"], "ZSERVE_PORT": str(port)}, wait=False
        )
        assert server.proc.wait(60) == 3
    assert (
        f"Error: Port {port} on 127.0.0.1 is in use by another program (not a zserve server of "
        "this ZSERVE_HOME): stop it, or pick a free port with --port 0\n"
    ) in server.output()
    assert "Traceback" not in server.output()


def test_unknown_and_missing_deployment(zhome: Path, servers: Any) -> None:
    server = servers({"ZSERVE_DEPLOYMENT_ID": "nosuchthing"}, wait=False)
    assert server.proc.wait(60) == 2
    assert "Error: No deployment matches 'nosuchthing'" in server.output()
    env = {k: v for k, v in os.environ.items() if "DEPLOYMENT_ID" not in k}
    proc = subprocess.run(
        [sys.executable, "-m", "zserve.server.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "No deployment given: set ZSERVE_DEPLOYMENT_ID" in proc.stderr


def test_a_snapshot_is_served_after_an_edit_and_a_deployment_without_one_is_refused(
    zhome: Path, tmp_path: Path, servers: Any
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    flow = app / "flow.py"
    flow.write_text(
        "from zserve import pipeline, step\n\n"
        "@step\ndef inc(x: int) -> int:\n    return x + 1\n\n"
        "@pipeline\ndef flow(x: int) -> int:\n    return inc(x)\n"
    )
    doc = json.loads(cli("deploy", "flow.py:flow", "--app-dir", str(app), "--json").stdout)
    deployment = doc["deployment"]
    assert deployment["source"] == f"{flow}:flow"
    # it serves from anywhere: the import root was recorded
    server = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"]})
    with server.client() as client:
        assert client.post("/invoke", json={"parameters": {"x": 1}}).json()["outputs"] == {
            "output": 2
        }
    server.stop()

    flow.write_text(flow.read_text().replace("x + 1", "x + 2"))
    # it serves its snapshot, not the edit, and says so
    edited = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"]})
    with edited.client() as client:
        assert client.post("/invoke", json={"parameters": {"x": 1}}).json()["outputs"] == {
            "output": 2
        }
    edited.stop()
    assert "serving flow:1 as deployed; flow.py changed since" in edited.output()

    # a deployment made before snapshots is refused, and the error says why
    forget_snapshot(zhome, deployment["id"])
    changed = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"]}, wait=False)
    assert changed.proc.wait(60) == 3
    out = changed.output()
    assert f"{flow} changed since deployment flow:1 was made: redeploy" in out
    assert "zserve deploy" in out
    assert "made before snapshots" in out


def test_sigterm_drains_an_in_flight_request(serve: Serve) -> None:
    server = serve("zserve.examples.slow:slow_pipeline")
    result: dict[str, Any] = {}

    def call() -> None:
        with server.client() as client:
            result["response"] = client.post(
                "/invoke", json={"parameters": {"delay": 1.0, "tag": "drained"}}
            )

    thread = threading.Thread(target=call)
    thread.start()
    # wait until the request is being executed (it shows in no metric yet: poll the log-free way)
    with server.client() as client:
        for _ in range(200):
            if client.get("/health").status_code == 200:
                break
    time.sleep(0.3)  # let the request reach the step (it sleeps 1 s inside)
    server.proc.send_signal(15)
    thread.join(30)
    assert result["response"].status_code == 200
    assert result["response"].json()["outputs"] == {"tag": "drained"}
    assert server.proc.wait(30) == 0


def test_a_failing_step_reaches_the_client_without_traceback_and_the_log_with_one(
    serve: Serve,
) -> None:
    server = serve("zserve.examples.failing:failing_pipeline")
    with server.client() as client:
        response = client.post("/invoke", json={"parameters": {"value": 5}})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["step"] == "explode"
    assert "Traceback" not in response.text
    server.stop()
    log = server.output()
    assert "Traceback (most recent call last)" in log
    assert "ValueError: cannot process value 5" in log


def test_a_worker_restarted_after_the_source_changed_stops_the_server(
    zhome: Path, tmp_path: Path, servers: Any
) -> None:
    flow = tmp_path / "wp.py"
    flow.write_text("from zserve import pipeline\n\n@pipeline\ndef wp() -> str:\n    return 'v1'\n")
    deployment = json.loads(cli("deploy", f"{flow}:wp", "--json").stdout)["deployment"]
    forget_snapshot(zhome, deployment["id"])  # a snapshot is served whatever the working copy
    server = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"], "ZSERVE_WORKERS": "2"})
    flow.write_text(flow.read_text().replace("v1", "v2"))
    workers = [
        c
        for c in psutil.Process(server.proc.pid).children()
        if "spawn_main" in " ".join(c.cmdline())
    ]
    assert len(workers) == 2
    workers[0].send_signal(signal.SIGKILL)
    assert server.proc.wait(60) is not None  # the whole server stops, rather than mix versions
    log = server.output()
    assert f"{flow} changed since deployment wp:1 was made" in log
    assert "stopping the server" in log
    assert log.count("Traceback") == 0
