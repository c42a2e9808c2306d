"""Attaching to a streamed invocation, in process: ``GET /stream/{id}`` and ``WS /stream`` on the
worker that runs a ``POST /invoke`` sent with ``Accept: text/event-stream`` replay its events
with the numbers of its own answer, then follow it to the same terminal event. (A real server
and ``zserve stream``: tests/e2e/test_invoke_sse.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.test_http import assert_problem
from tests.server.test_invoke_sse import EVENTS, STREAMING, events_of, streamed
from zserve import events as ev
from zserve.server.feeds import Feed, Feeds

GATED = "tests.server.pipelines:gated"
KEY = "k" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The events of an SSE answer as they come; each frame's ``id`` and ``event`` agree with
    its data."""
    fields: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
            continue
        if "data" in fields:
            doc: dict[str, Any] = json.loads(fields["data"])
            assert fields["event"] == doc["event"] and int(fields["id"]) == doc["seq"]
            yield doc
        fields = {}


def until(events: Iterator[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The events up to the first ``kind`` one, that one included."""
    seen = []
    for event in events:
        seen.append(event)
        if event["event"] == kind:
            return seen
    raise AssertionError(f"the stream ended without a {kind} event")


def gated_body(gate: Path, words: int = 2) -> dict[str, Any]:
    return {"parameters": {"gate": str(gate), "words": words}}


def test_attaching_mid_run_replays_then_follows_with_the_same_numbers(
    make_client: Any, tmp_path: Path
) -> None:
    client = make_client(GATED)
    gate = tmp_path / "gate"
    with client.stream("POST", "/invoke", json=gated_body(gate), headers=EVENTS) as invoking:
        job_id = invoking.headers["x-job-id"]
        own = sse_events(invoking.iter_lines())
        so_far = until(own, "step.chunk")  # the job waits for the gate
        assert [e["seq"] for e in so_far] == [1, 2, 3, 4]
        with client.stream("GET", f"/stream/{job_id}") as attached:
            assert attached.status_code == 200
            assert attached.headers["content-type"].startswith("text/event-stream")
            theirs = sse_events(attached.iter_lines())
            replayed = [next(theirs) for _ in so_far]
            assert replayed == so_far
            # the job is still running: what comes next is followed live, on both answers
            assert client.get(f"/jobs/{job_id}").json()["status"] == "running"
            gate.touch()
            followed = list(theirs)
        mine = so_far + list(own)
    assert replayed + followed == mine
    assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
    assert [e["event"] for e in mine[4:]] == ["step.chunk", "step.chunk", "step.completed",
                                              "job.completed"]  # fmt: skip
    assert mine[-1]["outputs"] == {"output": ["first", "word-0", "word-1"]}


def test_last_event_id_resumes_without_gaps_or_duplicates(make_client: Any, tmp_path: Path) -> None:
    client = make_client(GATED)
    gate = tmp_path / "gate"
    with client.stream("POST", "/invoke", json=gated_body(gate), headers=EVENTS) as invoking:
        job_id = invoking.headers["x-job-id"]
        own = sse_events(invoking.iter_lines())
        so_far = until(own, "step.chunk")
        # a follower that had the first two events comes back while the job runs
        resume = {"Last-Event-ID": "2"}
        with client.stream("GET", f"/stream/{job_id}", headers=resume) as attached:
            theirs = sse_events(attached.iter_lines())
            first = next(theirs)
            gate.touch()
            rest = [first, *theirs]
        mine = so_far + list(own)
    assert rest == mine[2:]
    # after the end, from every point: exactly what comes after it
    for seen in range(len(mine)):
        again = events_of(client.get(f"/stream/{job_id}", headers={"Last-Event-ID": str(seen)}))
        assert again == mine[seen:]
    # the terminal event delivered already: 204, which stops an EventSource reconnecting
    done = client.get(f"/stream/{job_id}", headers={"Last-Event-ID": str(len(mine))})
    assert done.status_code == 204 and done.text == ""
    assert client.head(f"/stream/{job_id}").status_code == 200
    bad = assert_problem(client.get(f"/stream/{job_id}", headers={"Last-Event-ID": "x"}), 400)
    assert "Last-Event-ID" in bad["detail"]


def test_after_the_end_the_stream_replays_to_the_terminal_event(make_client: Any) -> None:
    client = make_client(STREAMING)
    mine = events_of(streamed(client, {"words": 2, "delay": 0.001}))
    job_id = mine[0]["job_id"]
    assert events_of(client.get(f"/stream/{job_id}")) == mine
    assert mine[-1]["event"] == "job.completed"
    with client.websocket_connect("/stream") as ws:  # the WebSocket attaches the same way
        ws.send_json({"job_id": job_id, "after": 3})
        theirs = [ws.receive_json()]
        while theirs[-1]["event"] != "job.completed":
            theirs.append(ws.receive_json())
    assert theirs == mine[3:]


def test_the_websocket_attaches_mid_run_and_follows(make_client: Any, tmp_path: Path) -> None:
    client = make_client(GATED)
    gate = tmp_path / "gate"
    with client.stream("POST", "/invoke", json=gated_body(gate, 1), headers=EVENTS) as invoking:
        job_id = invoking.headers["x-job-id"]
        own = sse_events(invoking.iter_lines())
        so_far = until(own, "step.chunk")
        with client.websocket_connect("/stream") as ws:
            ws.send_json({"job_id": job_id})
            theirs = [ws.receive_json() for _ in so_far]
            gate.touch()
            while theirs[-1]["event"] != "job.completed":
                theirs.append(ws.receive_json())
        mine = so_far + list(own)
    assert theirs == mine


def test_a_cancelled_invocation_ends_its_followers_with_job_cancelled(
    make_client: Any, tmp_path: Path
) -> None:
    client = make_client(GATED)
    gate = tmp_path / "gate"
    with client.stream("POST", "/invoke", json=gated_body(gate), headers=EVENTS) as invoking:
        job_id = invoking.headers["x-job-id"]
        own = sse_events(invoking.iter_lines())
        until(own, "step.chunk")
        with client.stream("GET", f"/stream/{job_id}") as attached:
            theirs = sse_events(attached.iter_lines())
            until(theirs, "step.chunk")
            assert client.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"
            end = list(theirs)
        mine = list(own)
    assert end == mine and [e["event"] for e in end] == ["job.cancelled"]


def test_the_client_leaving_still_ends_the_followers(make_client: Any, tmp_path: Path) -> None:
    client = make_client(GATED)
    gate = tmp_path / "gate"
    with client.stream("POST", "/invoke", json=gated_body(gate), headers=EVENTS) as invoking:
        job_id = invoking.headers["x-job-id"]
        until(sse_events(invoking.iter_lines()), "step.chunk")
    # its answer closed: the invocation is cancelled, and its stream says so to a late follower
    events = events_of(client.get(f"/stream/{job_id}"))
    assert [e["event"] for e in events][-2:] == ["step.chunk", "job.cancelled"]
    assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_unknown_ids_and_plain_invokes_are_still_404(make_client: Any) -> None:
    client = make_client(STREAMING)
    unknown = "0b7c2f9e-5d1a-4c3e-9f8b-2a6d4e1c7b90"
    assert "No job" in assert_problem(client.get(f"/stream/{unknown}"), 404)["detail"]
    assert_problem(client.get("/stream/nope"), 404)
    plain = client.post("/invoke", json={"parameters": {"words": 1, "delay": 0}}).json()
    gone = assert_problem(client.get(f"/stream/{plain['job_id']}"), 404)
    assert "Accept: text/event-stream" in gone["detail"] and "worker" in gone["detail"]
    # a refused streamed invoke never was a job: nothing to attach to
    assert_problem(streamed(client, {"words": "many"}), 422)
    assert client.get("/jobs?status=completed").json()["jobs"][0]["job_id"] == plain["job_id"]


def test_a_feed_is_forgotten_with_its_jobs_record(make_client: Any) -> None:
    client = make_client(STREAMING, job_max_count=2)
    first = events_of(streamed(client, {"words": 1, "delay": 0}))[0]["job_id"]
    assert client.get(f"/stream/{first}").status_code == 200
    for _ in range(2):  # the worker keeps two sync jobs: the first one goes
        streamed(client, {"words": 1, "delay": 0})
    assert_problem(client.get(f"/jobs/{first}"), 404)
    assert_problem(client.get(f"/stream/{first}"), 404)


def test_auth_is_the_same_as_for_a_background_job(make_client: Any) -> None:
    client = make_client(STREAMING, auth_key=KEY)
    body = {"parameters": {"words": 1, "delay": 0}}
    mine = events_of(client.post("/invoke", json=body, headers={**EVENTS, **AUTH}))
    job_id = mine[0]["job_id"]
    assert_problem(client.get(f"/stream/{job_id}"), 401)
    assert events_of(client.get(f"/stream/{job_id}", headers=AUTH)) == mine
    issued = client.post(f"/jobs/{job_id}/token", headers=AUTH).json()
    assert events_of(client.get(issued["stream"])) == mine  # what a browser's EventSource uses
    with client.websocket_connect(f"/stream?token={issued['token']}") as ws:
        ws.send_json({"job_id": job_id})
        assert ws.receive_json() == mine[0]
    other = events_of(client.post("/invoke", json=body, headers={**EVENTS, **AUTH}))[0]
    assert_problem(client.get(f"/stream/{other['job_id']}?token={issued['token']}"), 401)


def event(kind: str) -> ev.Event:
    return ev.Event(kind, "job", 1.0)


@pytest.mark.parametrize(("keep", "keep_events"), [(2, 100), (100, 7)])
def test_ended_feeds_are_bounded_in_number_and_events(keep: int, keep_events: int) -> None:
    retained = {"a", "b", "c", "d"}
    feeds = Feeds(lambda job_id: job_id in retained, keep=keep, keep_events=keep_events)
    for job_id in ("a", "b", "c"):
        feed = feeds.open(job_id)
        for kind in (ev.JOB_QUEUED, ev.JOB_STARTED, ev.JOB_COMPLETED):
            feed.add(event(kind))
        feed.add(event(ev.STEP_CHUNK))  # nothing after the terminal event
        assert [e.seq for e in feed.events] == [1, 2, 3] and feed.ended
        feeds.ended(feed)
    assert feeds.get("a") is None and len(feeds) == 2  # the oldest went first
    assert [feeds.get(j) is not None for j in ("b", "c")] == [True, True]
    running = feeds.open("d")
    retained.discard("b")  # b's job record is forgotten: so is its feed
    assert feeds.get("b") is None and feeds.get("d") is running and len(feeds) == 2


def test_the_newest_ended_feed_is_kept_whatever_its_size() -> None:
    feeds = Feeds(lambda job_id: True, keep=4, keep_events=2)
    feed: Feed = feeds.open("big")
    for kind in (ev.JOB_QUEUED, ev.JOB_STARTED, ev.STEP_CHUNK, ev.JOB_COMPLETED):
        feed.add(event(kind))
    feeds.ended(feed)
    assert feeds.get("big") is feed
    refused = feeds.open("refused")
    refused.close()
    feeds.ended(refused, keep=False)
    assert feeds.get("refused") is None and feeds.get("big") is feed
