"""Resources in a server worker (in-process): /health says "starting" while they build, runs
are refused meanwhile, /status shows them, and they are torn down after the jobs drain."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import resource_pipelines as rp
from tests.e2e.conftest import wait_for

SOURCE = "tests.resource_pipelines:counted"


@pytest.fixture(autouse=True)
def isolated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, make_client: Callable[..., Any]
) -> Iterator[Path]:
    """(after the clients stop, so a failed test never leaves a build waiting)"""
    log = tmp_path / "resource.log"
    monkeypatch.setenv(rp.LOG_ENV, str(log))
    monkeypatch.delenv(rp.FAIL_ENV, raising=False)
    rp.EVENTS.clear()
    yield log
    if rp.GATE is not None:
        rp.GATE.set()  # never leave a build waiting
    rp.GATE = None
    rp.EVENTS.clear()


def lines(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_health_is_503_until_the_resources_are_built(
    make_client: Callable[..., Any], isolated: Path
) -> None:
    rp.GATE = threading.Event()
    client = make_client(SOURCE)
    wait_for(lambda: lines(isolated) == ["build"], "the build to begin")
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "starting"
    assert health.json()["resources"] == {"load_counted": "building"}
    refused = client.post("/invoke", json={"parameters": {"x": 1}})
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["type"].endswith("/starting")
    assert "'load_counted' still being built" in refused.json()["detail"]
    queued = client.post("/invoke?mode=async", json={"parameters": {"x": 1}})
    assert queued.status_code == 503
    with client.websocket_connect("/stream") as ws:  # a streamed job is refused the same way
        ws.send_json({"parameters": {"x": 1}})
        frame = ws.receive_json()
        assert (frame["event"], frame["status"]) == ("error", 503)
        assert frame["type"].endswith("/starting")
    assert client.get("/status").json()["resources"][0]["state"] == "building"

    rp.GATE.set()
    wait_for(lambda: client.get("/health").status_code == 200, "a 200 /health")
    assert client.get("/health").json()["resources"] == {"load_counted": "ready"}
    first = client.post("/invoke", json={"parameters": {"x": 1}}).json()["outputs"]["output"]
    second = client.post("/invoke", json={"parameters": {"x": 2}}).json()["outputs"]["output"]
    assert first["model_id"] == second["model_id"]  # built once, not per request
    assert lines(isolated) == ["build"]
    (status,) = client.get("/status").json()["resources"]
    assert status["name"] == "load_counted"
    assert status["factory"] == "tests.resource_pipelines:load_counted"
    assert status["kind"] == "generator"
    assert status["state"] == "ready"
    assert status["build_ms"] > 0


def test_a_pipeline_without_resources_is_ready_at_once(make_client: Callable[..., Any]) -> None:
    client = make_client("zserve.examples.weather:weather_pipeline")
    assert client.get("/health").status_code == 200
    assert "resources" not in client.get("/health").json()
    assert client.get("/status").json()["resources"] == []
    assert client.app.state.service.worker is None


def test_a_failing_factory_is_answered_503_naming_it(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rp.FAIL_ENV, "weights.bin not found")
    client = make_client(SOURCE)
    expected = ("resource 'load_counted' (tests.resource_pipelines:load_counted) failed to "
                "build: OSError: weights.bin not found")  # fmt: skip
    health = wait_for(
        lambda: (h := client.get("/health")).json()["status"] == "failed" and h, "a failed /health"
    )
    assert health.status_code == 503
    assert health.json()["error"] == expected
    assert health.json()["resources"] == {"load_counted": "failed"}
    refused = client.post("/invoke", json={"parameters": {"x": 1}})
    assert refused.status_code == 503
    assert refused.json()["detail"] == expected
    assert refused.json()["type"].endswith("/resource-failed")


def test_resources_are_never_request_fields(make_client: Callable[..., Any]) -> None:
    rp.GATE = None
    client = make_client("tests.resource_pipelines:kinds")
    info = client.get("/info").json()
    assert info["parameters"] == {"x": {"type": "int", "required": True}}
    assert set(info["parameters_json_schema"]["properties"]) == {"x"}
    openapi = client.get("/openapi.json").text
    for name in ("sync_fn", "gen_fn", "acm_fn", '"again"'):
        assert name not in openapi
    wait_for(lambda: client.get("/health").status_code == 200, "a 200 /health")
    refused = client.post("/invoke", json={"parameters": {"x": 1, "a": "mine"}})
    assert refused.status_code == 422
    answer = client.post("/invoke", json={"parameters": {"x": 1}}).json()
    assert answer["outputs"]["output"][1:3] == ["sync", "generator"]


def test_teardown_runs_after_the_jobs_drain(
    make_client: Callable[..., Any], isolated: Path
) -> None:
    client = make_client("tests.resource_pipelines:slow", grace_s=30)
    wait_for(lambda: client.get("/health").status_code == 200, "a 200 /health")
    job = client.post("/invoke?mode=async", json={"parameters": {"seconds": 0.5}}).json()
    wait_for(
        lambda: client.get(f"/jobs/{job['job_id']}").json()["status"] == "running",
        "the job to run",
    )
    client.__exit__(None, None, None)  # stops the app: drain, then teardown
    assert rp.EVENTS == ["step done"]  # the job finished before the teardown
    assert lines(isolated) == ["build", "teardown"]


def test_teardown_waits_for_a_batch_its_cancelled_runs_left_running(
    make_client: Callable[..., Any], isolated: Path
) -> None:
    """The drain cancels a run whose batch still runs in a thread; the model it uses is torn
    down only once that batch has returned (within the grace period)."""
    rp.BATCH_GATE.clear()
    client = make_client("tests.resource_pipelines:held", grace_s=1)
    wait_for(lambda: client.get("/health").status_code == 200, "a 200 /health")
    client.post("/invoke?mode=async", json={"parameters": {"x": 1}})
    wait_for(lambda: rp.EVENTS == ["batch started"], "the batch to start")
    # the drain gives up on the job after 1 s and cancels it; the batch is let go after 1.5 s,
    # while the server waits for it before the teardown
    opener = threading.Timer(1.5, rp.BATCH_GATE.set)
    opener.start()
    try:
        client.__exit__(None, None, None)
    finally:
        opener.cancel()
        rp.BATCH_GATE.set()
    assert lines(isolated) == ["build", "batch-done", "teardown"]


def test_the_iris_example_serves_a_prediction(make_client: Callable[..., Any]) -> None:
    pytest.importorskip("sklearn")
    client = make_client("zserve.examples.iris:iris")
    assert set(client.get("/info").json()["parameters"]) == {
        "sepal_length", "sepal_width", "petal_length", "petal_width",
    }  # fmt: skip
    wait_for(lambda: client.get("/health").status_code == 200, "a 200 /health", deadline_s=60)
    flower = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
    answer = client.post("/invoke", json={"parameters": flower}).json()["outputs"]["output"]
    assert answer["species"] == "virginica"
    assert set(answer["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert answer["probabilities"]["virginica"] > 0.5
    (status,) = client.get("/status").json()["resources"]
    assert status["name"] == "load_iris_model"
    assert status["state"] == "ready"


def test_the_batched_iris_example_answers_each_flower_as_the_unbatched_one() -> None:
    pytest.importorskip("sklearn")
    import asyncio

    from zserve.engine.plan import compile_plan
    from zserve.engine.runner import execute
    from zserve.engine.worker import Worker
    from zserve.examples.iris import iris, iris_batched

    flowers = [
        {"sepal_length": 5.0 + i / 10, "sepal_width": 3.0, "petal_length": 1.0 + i / 4,
         "petal_width": 0.2 + i / 10}
        for i in range(16)
    ]  # fmt: skip
    one, many = compile_plan(iris), compile_plan(iris_batched)
    sizes: list[int] = []
    many.on_batch = lambda step, size, waited: sizes.append(size)

    async def both() -> tuple[list[Any], list[Any]]:
        async with Worker(one), Worker(many):
            alone = [await execute(one, f, job_id=f"one-{i}") for i, f in enumerate(flowers)]
            runs = [execute(many, f, job_id=f"many-{i}") for i, f in enumerate(flowers)]
            return alone, await asyncio.wait_for(asyncio.gather(*runs), 60)

    alone, batched = asyncio.run(both())
    assert batched == alone
    assert len({a["output"]["species"] for a in alone}) >= 2  # not one answer for all
    assert sum(sizes) == 16 and max(sizes) > 1  # the model was called for several at once
