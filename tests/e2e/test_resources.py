"""Resources in real server processes: built once per worker before it reports ready, torn
down at stop, and a factory that fails stops the start with exit 3 (no restart loop)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import resource_pipelines as rp
from tests.e2e.conftest import READY, ServerProcess, cli, kill_tree, wait_for
from tests.e2e.test_dev import Dev

pytestmark = pytest.mark.slow

SOURCE = "tests.resource_pipelines:counted"
FAILURE = ("resource 'load_counted' (tests.resource_pipelines:load_counted) failed to build: "
           "OSError: weights.bin not found")  # fmt: skip


def entries(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    return [
        (word, int(pid)) for word, pid in (line.split() for line in log.read_text().splitlines())
    ]


def test_two_workers_build_twice_not_per_request_and_tear_down_at_stop(
    serve: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    log = tmp_path / "resource.log"
    server = serve(SOURCE, workers=2, **{rp.LOG_ENV: str(log)})
    wait_for(lambda: len(entries(log)) == 2, "both workers to build")  # /health may answer first
    with server.client() as client:
        answers = [client.post("/invoke", json={"parameters": {"x": i}}).json()["outputs"]["output"]
                   for i in range(30)]  # fmt: skip
        statuses = {client.get("/status").json()["pid"]: client.get("/status").json()["resources"]
                    for _ in range(10)}  # fmt: skip
    builds = [pid for word, pid in entries(log) if word == "build"]
    assert len(builds) == 2 and len(set(builds)) == 2  # one per worker, none per request
    for answer in answers:
        assert answer["built_by"] == answer["pid"]  # each worker uses its own
        assert answer["pid"] in builds
    for resources in statuses.values():
        assert [(r["name"], r["state"]) for r in resources] == [("load_counted", "ready")]
    assert server.stop() == 0
    teardowns = [pid for word, pid in entries(log) if word == "teardown"]
    assert sorted(teardowns) == sorted(builds)


def test_health_is_503_while_the_model_loads(
    deployed: Callable[..., dict[str, Any]],
    servers: Callable[..., ServerProcess],
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    deployment = deployed(SOURCE)
    server = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"], rp.GATE_ENV: str(gate)},
                     wait=False)  # fmt: skip
    match = wait_for(lambda: READY.search(server.output()), "the ready line")
    url = match.group(2)

    def health() -> httpx.Response | None:
        try:
            return httpx.get(url + "/health", timeout=5)
        except httpx.TransportError:
            return None

    starting = wait_for(health, "an answer from /health")
    assert starting.status_code == 503
    assert starting.json()["status"] == "starting"
    assert starting.json()["resources"] == {"load_counted": "building"}
    refused = httpx.post(url + "/invoke", json={"parameters": {"x": 1}}, timeout=5)
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
    gate.touch()
    wait_for(lambda: (h := health()) is not None and h.status_code == 200, "a 200 /health")
    answer = httpx.post(url + "/invoke", json={"parameters": {"x": 1}}, timeout=5)
    assert answer.json()["outputs"]["output"]["x"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_factory_fails_the_start_with_exit_3(
    deployed: Callable[..., dict[str, Any]],
    servers: Callable[..., ServerProcess],
    tmp_path: Path,
    workers: int,
) -> None:
    log = tmp_path / "resource.log"
    deployment = deployed(SOURCE)
    server = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"], "ZSERVE_WORKERS": str(workers),
                      rp.LOG_ENV: str(log), rp.FAIL_ENV: "weights.bin not found"},
                     wait=False)  # fmt: skip
    assert server.proc.wait(60) == 3, server.output()
    assert f"Error: {FAILURE}" in server.output()
    assert len(entries(log)) == workers  # each worker tried once: no restart loop
    home = Path(os.environ["ZSERVE_HOME"])
    assert not list((home / "servers").glob("*.failed"))


def test_start_detach_reports_a_failing_factory(
    deployed: Callable[..., dict[str, Any]], started: list[dict[str, Any]]
) -> None:
    deployment = deployed(SOURCE)
    env = {**os.environ, rp.FAIL_ENV: "weights.bin not found"}
    for workers in ("1", "2"):
        proc = cli("start", "-d", deployment["id"], "--port", "0", "--detach", "-w", workers,
                   env=env, check=False)  # fmt: skip
        assert proc.returncode == 3, proc.stderr
        assert FAILURE in proc.stderr
    assert "Started server" not in proc.stdout


def test_zserve_run_with_the_iris_example() -> None:
    pytest.importorskip("sklearn")
    proc = cli("run", "zserve.examples.iris:iris", "-p", "sepal_length=5.1",
               "-p", "sepal_width=3.5", "-p", "petal_length=1.4", "-p", "petal_width=0.2",
               env={**os.environ})  # fmt: skip
    assert '"species": "setosa"' in proc.stdout


DEV_PIPELINE = """import os

from zserve import Resource, pipeline, step


def load_model() -> str:
    raise OSError("no model file")


@step
def predict(x: int, model: str = Resource(load_model)) -> str:
    return model


@pipeline
def guess(x: int) -> str:
    return predict(x)
"""


def test_dev_reports_a_failing_factory_and_answers_503(zhome: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "guess.py").write_text(DEV_PIPELINE)
    proc = Dev(project, "guess.py:guess", "--port", "0")
    try:
        dev_fails_softly(proc)
    finally:
        kill_tree(proc.proc.pid)
        proc.proc.wait(10)


def dev_fails_softly(proc: Dev) -> None:
    url = re.search(r" at (http://\S+?);", proc.wait_line(r"^zserve dev: ")).group(1)
    line = proc.wait_line(r"^Error: resource 'load_model'")
    assert "failed to build: OSError: no model file" in line
    health = wait_for(
        lambda: (h := httpx.get(url + "/health", timeout=10)).json()["status"] == "failed" and h,
        "a failed /health",
    )
    assert health.status_code == 503
    refused = httpx.post(url + "/invoke", json={"parameters": {"x": 1}}, timeout=10)
    assert refused.status_code == 503
    assert "OSError: no model file" in refused.json()["detail"]
