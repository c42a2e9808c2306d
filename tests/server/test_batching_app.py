"""Dynamic batching behind the HTTP API (in-process TestClient): concurrent requests and jobs
share calls of a batched step, each gets its own answer or its own problem, a request that
times out leaves its batch alone, and /metrics, /status and /info describe the batching."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from tests.server import batched
from tests.server.test_http import assert_problem
from zserve.engine.batching import Batcher

SCALING = "tests.server.batched:scaling"
DEADLINE_S = 20.0


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(40) as executor:
        yield executor
    batched.GATE.set()


def until(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def batcher_of(client: Any) -> Batcher:
    batcher: Batcher = client.app.state.service.plan.batchers[0]
    return batcher


def held(client: Any, pool: ThreadPoolExecutor) -> Future[Any]:
    """Send x=0 and wait until its batch runs, held by the gate."""
    batched.GATE.clear()
    first = pool.submit(client.post, "/invoke", json={"parameters": {"x": 0}})
    until(lambda: batcher_of(client).running, "the first batch to run")
    return first


def invoke(client: Any, pool: ThreadPoolExecutor, body: dict[str, Any]) -> Future[Any]:
    return pool.submit(client.post, "/invoke", json=body)


def test_32_concurrent_requests_get_their_own_answers_from_calls_of_at_most_8(
    make_client: Any, pool: ThreadPoolExecutor
) -> None:
    client = make_client(SCALING)
    first = held(client, pool)
    rest = {x: invoke(client, pool, {"parameters": {"x": x}}) for x in range(1, 32) if x != 13}
    rest[32] = invoke(client, pool, {"parameters": {"x": 32}})
    until(lambda: batcher_of(client).queued == 31, "31 calls to pile up")
    batched.GATE.set()
    assert first.result(DEADLINE_S).json()["outputs"]["output"] == {"y": 0, "batch": 1,
                                                                    "labelled": 1}  # fmt: skip
    sizes = []
    for x, future in rest.items():
        response = future.result(DEADLINE_S)
        assert response.status_code == 200, response.text
        output = response.json()["outputs"]["output"]
        assert output["y"] == 2 * x and output["labelled"] == 1
        sizes.append(output["batch"])
    assert max(sizes) == 8 and sorted(set(sizes)) == [7, 8]


def test_one_failing_item_fails_one_request_with_a_problem(
    make_client: Any, pool: ThreadPoolExecutor
) -> None:
    client = make_client(SCALING)
    first = held(client, pool)
    rest = {x: invoke(client, pool, {"parameters": {"x": x}}) for x in (11, 12, 13, 14)}
    until(lambda: batcher_of(client).queued == 4, "four calls to pile up")
    batched.GATE.set()
    assert first.result(DEADLINE_S).status_code == 200
    doc = assert_problem(rest.pop(13).result(DEADLINE_S), 500)
    assert (
        doc["step"] == "scale"
        and doc["detail"] == "Step 'scale' raised ValueError: cannot scale 13"
    )
    for x, future in rest.items():
        response = future.result(DEADLINE_S)
        assert response.status_code == 200
        assert response.json()["outputs"]["output"] == {"y": 2 * x, "batch": 4, "labelled": 1}


def test_a_request_that_times_out_in_the_queue_leaves_its_batch_alone(
    make_client: Any, pool: ThreadPoolExecutor
) -> None:
    client = make_client(SCALING)
    first = held(client, pool)
    late = invoke(client, pool, {"parameters": {"x": 5}, "timeout_s": 0.1})
    others = [invoke(client, pool, {"parameters": {"x": x}}) for x in (6, 7)]
    assert_problem(late.result(DEADLINE_S), 504)
    until(lambda: batcher_of(client).queued == 2, "the two others queued, the late one gone")
    batched.GATE.set()
    assert first.result(DEADLINE_S).status_code == 200
    outputs = [f.result(DEADLINE_S).json()["outputs"]["output"] for f in others]
    assert outputs == [{"y": 12, "batch": 2, "labelled": 1}, {"y": 14, "batch": 2, "labelled": 1}]


def test_async_jobs_and_sync_requests_share_batches(
    make_client: Any, pool: ThreadPoolExecutor
) -> None:
    client = make_client(SCALING)
    first = held(client, pool)
    accepted = client.post("/invoke?mode=async", json={"parameters": {"x": 21}})
    assert accepted.status_code == 202
    sync = invoke(client, pool, {"parameters": {"x": 22}})
    until(lambda: batcher_of(client).queued == 2, "the job's call and the request's")
    batched.GATE.set()
    assert first.result(DEADLINE_S).status_code == 200
    assert sync.result(DEADLINE_S).json()["outputs"]["output"]["batch"] == 2
    job_id = accepted.json()["job_id"]

    def job() -> dict[str, Any] | None:
        doc: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return doc if doc["status"] == "completed" else None

    until(job, "the job to complete")
    assert client.get(f"/jobs/{job_id}").json()["outputs"]["output"] == {
        "y": 42, "batch": 2, "labelled": 1
    }  # fmt: skip


def test_metrics_status_and_info_describe_the_batching(make_client: Any) -> None:
    client = make_client(SCALING)
    for x in (1, 2, 3):
        assert client.post("/invoke", json={"parameters": {"x": x}}).status_code == 200
    text = client.get("/metrics", headers={"accept": "text/plain"}).text
    assert 'zserve_batch_size_bucket{le="1.0",step="scale"} 3.0' in text
    assert 'zserve_batch_size_count{step="scale"} 3.0' in text
    assert 'zserve_batch_wait_seconds_count{step="scale"} 3.0' in text
    summary = client.get("/metrics").json()["batching"]["scale"]
    assert summary["batches"] == 3 and summary["calls"] == 3 and summary["mean_size"] == 1.0
    assert set(summary["wait_ms"]) == {"p50", "p99"}
    assert client.get("/status").json()["batching"] == {
        "scale": {"max_size": 8, "max_wait_ms": 5.0}
    }
    steps = {s["name"]: s for s in client.get("/info").json()["steps"]}
    assert steps["scale"]["batch"] == {"max_size": 8, "max_wait_ms": 5.0}
    assert "batch" not in steps["label"]


def test_a_server_without_batched_steps_has_no_batch_metrics(make_client: Any) -> None:
    client = make_client("zserve.examples.weather:weather_pipeline")
    assert "zserve_batch" not in client.get("/metrics", headers={"accept": "text/plain"}).text
    assert "batching" not in client.get("/metrics").json()
    assert client.get("/status").json()["batching"] == {}
