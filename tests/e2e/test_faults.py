"""Faults end in a state: a server killed with SIGKILL takes its workers with it, and its port
can be served again at once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import cli, fresh, wait_for, wait_status

pytestmark = pytest.mark.slow

WEATHER = "zserve.examples.weather:weather_pipeline"


def test_workers_die_with_a_killed_supervisor(deployed: Any, servers: Any) -> None:
    deployment = deployed(WEATHER)
    env = {"ZSERVE_DEPLOYMENT_ID": deployment["id"], "ZSERVE_WORKERS": "2", "ZSERVE_GRACE_S": "1"}
    server = servers(env)
    supervisor = psutil.Process(server.proc.pid)

    def workers_up() -> list[psutil.Process] | None:
        kids = [k for k in supervisor.children() if "spawn_main" in " ".join(k.cmdline())]
        return kids if len(kids) == 2 else None

    workers = wait_for(workers_up, "two workers")
    everything = supervisor.children(recursive=True)  # the workers and multiprocessing's helpers
    assert set(workers) <= set(everything)
    port = int(server.url.rsplit(":", 1)[1])
    metrics_dir = workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"]
    os.kill(supervisor.pid, signal.SIGKILL)
    killed = time.monotonic()
    server.proc.wait(10)
    _, alive = psutil.wait_procs(everything, timeout=15)
    took = time.monotonic() - killed
    print(f"\nworkers gone {took:.2f} s after the supervisor's SIGKILL; orphaned: {len(alive)}")
    for proc in alive:
        proc.kill()
    assert not alive, "workers outlived their supervisor"
    assert os.path.isdir(metrics_dir)  # a killed server cannot remove its metrics folder...
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health", timeout=2)
    # the port is free again: a new server takes it
    again = servers({**env, "ZSERVE_PORT": str(port)})
    assert httpx.get(f"{again.url}/health").status_code == 200
    assert not os.path.exists(metrics_dir)  # ...the next server with several workers does


SLOW = "zserve.examples.slow:slow_pipeline"


def exited(pid: int) -> bool:
    """Gone, or a zombie that init has not reaped yet (`stop` does not wait for that)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_ps_and_stop_find_the_workers_a_killed_supervisor_left(serve: Any) -> None:
    # a worker that drains a long job when its supervisor is killed outlives it for the grace
    server = serve(SLOW, workers=2, ZSERVE_GRACE_S="60")
    job = httpx.post(f"{server.url}/invoke?mode=async", json={"parameters": {"delay": 60}})
    wait_status(server.url, job.json()["job_id"], "running")
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)

    def leftovers() -> list[dict[str, Any]]:
        [row] = json.loads(cli("ps", "--json").stdout)["servers"]
        # the idle worker also got SIGTERM with its supervisor gone: it is listed until it has
        # exited (a few tenths of a second), the busy one until its job has drained
        gone = row["status"].startswith("server gone")
        return row["processes"] if gone and len(row["processes"]) == 1 else []

    processes = wait_for(leftovers, "ps to list the one leftover worker")
    assert [p["role"] for p in processes] == ["leftover worker"]
    pid = processes[0]["pid"]
    assert psutil.Process(pid).is_running()
    stopped = json.loads(cli("stop", "--all", "--timeout", "2", "--json").stdout)["stopped"]
    print(f"\nleftover worker {pid} listed by ps and stopped by stop --all: {stopped}")
    assert len(stopped) == 1 and exited(pid)
    assert json.loads(cli("ps", "--json").stdout)["servers"] == []
    registry = Path(os.environ["ZSERVE_HOME"]) / "servers"
    assert not list(registry.glob("*.json"))


def test_a_queued_sync_run_whose_client_left_is_dropped(serve: Any) -> None:
    server = serve(SLOW, ZSERVE_MAX_CONCURRENCY="1", ZSERVE_MAX_QUEUE="2")
    holder = httpx.post(
        f"{server.url}/invoke?mode=async", json={"parameters": {"delay": 1.5, "tag": "holder"}}
    ).json()["job_id"]
    wait_for(
        lambda: httpx.get(f"{server.url}/jobs/{holder}").json()["status"] == "running", "holder"
    )
    for _ in range(4):  # drop-and-go: each gives up while queued
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                f"{server.url}/invoke",
                json={"parameters": {"delay": 0, "tag": "gone"}},
                timeout=0.2,
            )

    def dropped() -> list[dict[str, Any]]:
        jobs = httpx.get(f"{server.url}/jobs", params={"status": "cancelled"}).json()["jobs"]
        return jobs if len(jobs) == 4 else []

    gone = wait_for(dropped, "the four queued runs to be dropped")
    assert all(job["mode"] == "sync" and job["started_at"] is None for job in gone)
    assert all(s["status"] != "completed" for job in gone for s in job["steps"])  # never ran
    # a real caller is not refused (429) because of them, and waits only for the holder
    start = time.monotonic()
    answer = httpx.post(
        f"{server.url}/invoke", json={"parameters": {"delay": 0, "tag": "real"}}, timeout=10
    )
    waited = time.monotonic() - start
    print(f"\nfour drop-and-go requests dropped; the next caller waited {waited:.2f} s")
    assert answer.status_code == 200 and answer.json()["outputs"]["tag"] == "real"
    assert waited < 1.5


def test_a_deleted_broker_file_fails_loudly_on_every_worker(serve: Any) -> None:
    server = serve(WEATHER, workers=2)
    supervisor = psutil.Process(server.proc.pid)
    body = {"parameters": {"city": "x"}}
    ok = fresh(server.url, "POST", "/invoke?mode=async", json=body)
    assert ok.status_code == 202
    [broker] = (Path(os.environ["ZSERVE_HOME"]) / "brokers").glob("*.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{broker}{suffix}").unlink(missing_ok=True)

    def refused_everywhere() -> list[httpx.Response] | None:
        answers = [fresh(server.url, "POST", "/invoke?mode=async", json=body) for _ in range(8)]
        return answers if all(a.status_code == 503 for a in answers) else None

    answers = wait_for(refused_everywhere, "every worker to refuse async jobs", deadline_s=15)
    doc = answers[0].json()
    assert doc["type"].endswith("/broker-unavailable") and "deleted or replaced" in doc["detail"]
    assert fresh(server.url, "POST", "/invoke", json=body).status_code == 200  # sync: no broker

    # a worker started again (uvicorn restarts a lost one) refuses the same way
    def workers() -> list[psutil.Process]:
        found = []
        for kid in supervisor.children():
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(kid.cmdline()):
                    found.append(kid)
        return found

    def healthy() -> bool:
        try:
            return fresh(server.url, "GET", "/health").status_code == 200
        except httpx.TransportError:
            return False

    before = set(workers())
    next(iter(before)).kill()
    wait_for(lambda: len(set(workers()) - before) == 1 and healthy(), "a worker to be restarted")
    wait_for(refused_everywhere, "every worker, the new one too, to refuse", deadline_s=15)
    assert "Traceback" not in server.output()  # one line a worker, no crash loop
    assert "deleted or replaced" in server.output()
