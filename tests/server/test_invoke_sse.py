"""One-request streaming, in process: ``POST /invoke`` with ``Accept: text/event-stream`` answers
with that invocation's events, in the JSON of ``GET /stream/{id}``; refusals stay problem+json.
(Events arriving before the job ends, disconnects and the CLI: tests/e2e/test_invoke_sse.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.server.test_http import assert_problem

STREAMING = "zserve.examples.streaming:streaming_pipeline"
FAILING = "zserve.examples.failing:failing_pipeline"
SLOW = "zserve.examples.slow:slow_pipeline"
WEATHER = "zserve.examples.weather:weather_pipeline"
EVENTS = {"Accept": "text/event-stream"}


def frames(text: str) -> list[dict[str, str]]:
    """The SSE blocks of an answer: field -> value (a comment line is kept as ``":"``)."""
    found = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            fields[name or ":"] = value.removeprefix(" ")
        found.append(fields)
    return found


def events_of(response: Any) -> list[dict[str, Any]]:
    """The events of an SSE answer; each frame's ``id`` and ``event`` agree with its data."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    docs = []
    for frame in frames(response.text):
        if "data" not in frame:
            continue
        doc = json.loads(frame["data"])
        assert frame["event"] == doc["event"] and int(frame["id"]) == doc["seq"]
        docs.append(doc)
    return docs


def shape(event: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """What must be the same on both streams: type, step and the members present."""
    return event["event"], event.get("step", ""), tuple(sorted(event))


def streamed(client: Any, params: dict[str, Any], **body: Any) -> Any:
    return client.post("/invoke", json={"parameters": params, **body}, headers=EVENTS)


def followed(client: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The same invocation as an async job, followed on ``GET /stream/{id}``."""
    accepted = client.post("/invoke?mode=async", json={"parameters": params})
    assert accepted.status_code == 202, accepted.text
    return events_of(client.get(f"/stream/{accepted.json()['job_id']}"))


def test_events_in_order_with_the_outputs_in_the_json_of_the_stream_route(
    make_client: Any,
) -> None:
    client = make_client(STREAMING)
    params = {"words": 3, "delay": 0.001}
    response = streamed(client, params)
    assert response.text.startswith("retry: 2000\nid: 1\n")
    assert response.headers["cache-control"] == "no-cache"
    events = events_of(response)
    job_id = response.headers["x-job-id"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["job_id"] == job_id and e["ts"] > 0 for e in events)
    assert [f"{e['event']}:{e.get('step', '')}" for e in events] == [
        "job.queued:", "job.started:",
        "step.started:generate", *["step.chunk:generate"] * 3, "step.completed:generate",
        "step.started:summarize", *["step.progress:summarize"] * 3, "step.completed:summarize",
        "job.completed:",
    ]  # fmt: skip
    assert [e["chunk"] for e in events if e["event"] == "step.chunk"] == [
        "word-0", "word-1", "word-2",
    ]  # fmt: skip
    assert events[1]["capture"] == "none"
    end = events[-1]
    assert end["outputs"] == {"summary": {"tokens": 3, "text": "word-0 word-1 word-2"}}
    assert end["run_id"] is None and end["execution_time_ms"] > 0
    # the same events, member for member, as the stream of the same job run in the background
    assert [shape(e) for e in events] == [shape(e) for e in followed(client, params)]
    # the job is kept like any sync invoke's
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["mode"] == "sync"
    assert [(s["name"], s["status"]) for s in job["steps"]] == [
        ("generate", "completed"), ("summarize", "completed"),
    ]  # fmt: skip
    # its events can be replayed on GET /stream/{id} (tests/server/test_invoke_attach.py); a
    # plain JSON invoke's are not kept
    assert events_of(client.get(f"/stream/{job_id}")) == events
    plain = client.post("/invoke", json={"parameters": params})
    gone = assert_problem(client.get(f"/stream/{plain.json()['job_id']}"), 404)
    assert "text/event-stream" in gone["detail"]


def test_a_failing_step_ends_the_stream_with_job_failed_as_the_stream_route_says_it(
    make_client: Any,
) -> None:
    client = make_client(FAILING)
    events = events_of(streamed(client, {"value": 7}))
    assert [e["event"] for e in events] == [
        "job.queued", "job.started", "step.started", "step.completed", "step.started",
        "step.failed", "job.failed",
    ]  # fmt: skip
    assert events[-1]["error"] == {
        "reason": "step_failed",
        "step": "explode",
        "message": "Step 'explode' raised ValueError: cannot process value 7",
    }
    assert events[-2]["error"] == {"type": "ValueError", "message": "cannot process value 7"}
    assert "Traceback" not in json.dumps(events)
    assert [shape(e) for e in events] == [shape(e) for e in followed(client, {"value": 7})]
    job_id = events[0]["job_id"]
    assert client.get(f"/jobs/{job_id}").json()["error"] == events[-1]["error"]
    # counted like any invocation: this one and the background job
    assert client.get("/metrics").json()["invocations"]["by_status"]["failed"] == 2


def test_the_timeout_ends_the_stream_with_job_failed_timeout(make_client: Any) -> None:
    client = make_client(SLOW)
    events = events_of(streamed(client, {"delay": 30}, timeout_s=0.05))
    assert [e["event"] for e in events] == ["job.queued", "job.started", "step.started",
                                            "job.failed"]  # fmt: skip
    assert events[-1]["error"]["reason"] == "timeout"
    assert "0.05 s" in events[-1]["error"]["message"]
    assert client.get(f"/jobs/{events[0]['job_id']}").json()["status"] == "failed"


def test_refusals_are_problems_with_their_status_not_streams(make_client: Any) -> None:
    client = make_client(STREAMING, max_concurrency=1, max_queue=0)
    doc = assert_problem(streamed(client, {"words": "many"}), 422)
    assert doc["errors"][0]["loc"] == ["parameters", "words"]
    assert_problem(client.post("/invoke", content=b"{", headers={**EVENTS,
                   "Content-Type": "application/json"}), 400)  # fmt: skip
    assert_problem(client.post("/invoke", content=b"{}", headers=EVENTS), 415)
    assert client.get("/metrics").json()["invocations"]["by_status"]["invalid"] == 3


def test_an_auth_key_is_required_and_then_the_answer_streams(make_client: Any) -> None:
    client = make_client(WEATHER, auth_key="s3cret")
    body = {"parameters": {"city": "Oslo"}}
    missing = assert_problem(client.post("/invoke", json=body, headers=EVENTS), 401)
    assert "missing" in missing["detail"]
    wrong = {**EVENTS, "Authorization": "Bearer nope"}
    assert_problem(client.post("/invoke", json=body, headers=wrong), 401)
    right = {**EVENTS, "Authorization": "Bearer s3cret"}
    events = events_of(client.post("/invoke", json=body, headers=right))
    assert events[-1]["event"] == "job.completed" and "Oslo" in events[-1]["outputs"]["output"]


def test_a_json_invoke_and_an_async_one_are_unchanged_by_the_feature(make_client: Any) -> None:
    client = make_client(WEATHER)
    plain = client.post("/invoke", json={"parameters": {"city": "Rome"}})
    assert plain.headers["content-type"] == "application/json" and plain.json()["success"]
    # Accept: text/event-stream asks only a sync invoke to stream: ?mode=async answers its 202
    queued = client.post("/invoke?mode=async", json={"parameters": {"city": "Rome"}},
                         headers=EVENTS)  # fmt: skip
    assert queued.status_code == 202 and queued.json()["status"] == "queued"


def test_info_advertises_the_feature_and_openapi_documents_it(make_client: Any) -> None:
    client = make_client(WEATHER)
    assert client.get("/info").json()["features"] == ["invoke-stream"]
    ok = client.get("/openapi.json").json()["paths"]["/invoke"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/json", "text/event-stream"}


@pytest.mark.parametrize("accept", ["text/event-stream", "application/json, text/event-stream",
                                    "text/event-stream; q=1"])  # fmt: skip
def test_accept_may_name_other_types_too(make_client: Any, accept: str) -> None:
    client = make_client(WEATHER)
    response = client.post("/invoke", json={"parameters": {"city": "Rome"}},
                           headers={"Accept": accept})  # fmt: skip
    assert events_of(response)[-1]["event"] == "job.completed"


def test_tracked_mode_records_the_streamed_run(make_client: Any, tmp_path: Path) -> None:
    client = make_client("tests.server.tracked:tracked", store_url=f"sqlite:///{tmp_path}/z.db",
                         artifact_dir=str(tmp_path / "artifacts"))  # fmt: skip
    body = {"parameters": {"city": "Lima"}, "capture_override": {"mode": "full"}}
    events = events_of(client.post("/invoke", json=body, headers=EVENTS))
    assert events[1]["capture"] == "full"
    end = events[-1]
    assert end["event"] == "job.completed" and end["run_id"]
    assert client.get(f"/jobs/{end['job_id']}").json()["run_id"] == end["run_id"]
    deadline = time.monotonic() + 30
    while (run := client.get(f"/runs/{end['run_id']}")).status_code != 200:
        assert time.monotonic() < deadline, run.text
        time.sleep(0.02)
    doc = run.json()
    assert doc["job_id"] == end["job_id"] and doc["status"] == "completed"
    assert doc["capture"] == "full" and doc["parameters"]["city"] == "Lima"
    assert {s["name"] for s in doc["steps"]} == {"lookup_user", "forecast", "report"}
    # a failing tracked run is recorded too, and its stream names it
    body["parameters"] = {"fail": True}
    failed = events_of(client.post("/invoke", json=body, headers=EVENTS))[-1]
    assert failed["event"] == "job.failed" and failed["run_id"]
