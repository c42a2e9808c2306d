"""Protocol details: streams of finished jobs end at once, WebSocket errors (close reasons in
UTF-8 bytes, problem documents in error frames, hostile messages), and HEAD on GET routes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.server.test_http import WEATHER

JSON = {"content-type": "application/json"}


def finished_job(client: Any) -> tuple[str, list[dict[str, Any]]]:
    """An async job run to its end, and its events as the SSE stream gives them."""
    job_id = client.post("/invoke?mode=async", json={"parameters": {"city": "Oslo"}}).json()[
        "job_id"
    ]
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{job_id}").json()["status"] != "completed":
        assert time.monotonic() < deadline, "the job did not complete"
        time.sleep(0.01)
    response = client.get(f"/stream/{job_id}")
    assert response.text.startswith("retry: ")  # how long an EventSource waits to reconnect
    events = [
        json.loads(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    return job_id, events


def test_stream_of_a_finished_job_resumed_at_its_end_is_204(make_client: Any) -> None:
    client = make_client(WEATHER, sse_ping_s=30)
    job_id, events = finished_job(client)
    assert events[-1]["event"] == "job.completed"
    last = events[-1]["seq"]
    start = time.monotonic()
    for after in (last, last + 5):
        response = client.get(f"/stream/{job_id}", headers={"last-event-id": str(after)})
        assert response.status_code == 204 and response.content == b""
    assert time.monotonic() - start < 5  # not after a ping interval (30 s)
    tail = client.get(f"/stream/{job_id}", headers={"last-event-id": str(last - 1)})
    assert tail.status_code == 200 and f"id: {last}\n" in tail.text


def test_websocket_attached_after_the_end_closes_at_once(make_client: Any) -> None:
    client = make_client(WEATHER, sse_ping_s=30)
    job_id, events = finished_job(client)
    with client.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps({"job_id": job_id, "after": events[-1]["seq"]}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1000


def test_head_on_a_stream_and_on_get_routes(make_client: Any) -> None:
    client = make_client(WEATHER)
    job_id, _ = finished_job(client)
    head = client.head(f"/stream/{job_id}", headers={"last-event-id": "1"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/event-stream")
    for path in ("/info", "/status", "/metrics", "/jobs", f"/jobs/{job_id}", "/openapi.json"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""
        if path != "/status":  # its uptime_s moves on between the two requests
            assert head.headers["content-length"] == get.headers["content-length"], path
    assert client.head("/jobs/nope").status_code == 404
    assert client.head("/invoke").status_code == 405


def test_websocket_error_frames_are_problem_documents(make_client: Any) -> None:
    client = make_client(WEATHER)
    with client.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps({"job_id": "no-such-job"}))
        frame = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert frame["event"] == "error" and frame["status"] == 404 and frame["code"] == 1008
    assert closed.value.code == 1008 and "no-such-job" in closed.value.reason


def test_a_long_non_ascii_close_reason_is_cut_between_characters(make_client: Any) -> None:
    client = make_client(WEATHER)
    with client.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps({"parameters": {"city": "x", "ville_é" + "é" * 80: 1}}))
        frame = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert frame["status"] == 422 and frame["code"] == 1008
    reason = closed.value.reason
    assert closed.value.code == 1008 and reason.endswith("...")
    assert len(reason.encode()) <= 123


@pytest.mark.parametrize(
    "message", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "3"]
)
def test_hostile_or_odd_messages_close_1003(make_client: Any, message: str) -> None:
    client = make_client(WEATHER)
    with client.websocket_connect("/stream") as ws:
        ws.send_text(message)
        frame = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert frame["status"] == 400 and frame["code"] == 1003
    assert closed.value.code == 1003
    # the server is fine afterwards
    assert (
        client.post("/invoke", json={"parameters": {"city": "a"}}, headers=JSON).status_code == 200
    )


def test_jobs_are_listed_a_page_at_a_time_without_outputs(make_client: Any) -> None:
    client = make_client(WEATHER)
    made = [client.post("/invoke", json={"parameters": {"city": f"c{i}"}}).json() for i in range(5)]
    pages, cursor = [], None
    while True:
        query = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        doc = client.get("/jobs", params=query).json()
        pages.append([j["job_id"] for j in doc["jobs"]])
        assert all("outputs" not in j for j in doc["jobs"])
        cursor = doc["next"]
        if cursor is None:
            break
    assert [job for page in pages for job in page] == [m["job_id"] for m in reversed(made)]
    assert [len(page) for page in pages] == [2, 2, 1]


def test_jobs_are_listed_by_id_prefix_and_a_job_by_its_exact_id(make_client: Any) -> None:
    client = make_client(WEATHER)
    made = [
        client.post("/invoke", json={"parameters": {"city": f"c{i}"}}).json() for i in range(17)
    ]
    ids = [m["job_id"] for m in reversed(made)]  # newest first
    first = ids[0]
    for prefix in (first, first[:8], first[:1]):
        listed = client.get("/jobs", params={"prefix": prefix}).json()["jobs"]
        assert [j["job_id"] for j in listed] == [i for i in ids if i.startswith(prefix)]
    assert client.get("/jobs", params={"prefix": "zz"}).json()["jobs"] == []
    # 17 ids, 16 hex digits: two at least share their first character
    shared = next(i[:1] for i in ids if sum(j.startswith(i[:1]) for j in ids) > 1)
    assert len(client.get("/jobs", params={"prefix": shared}).json()["jobs"]) > 1
    assert "prefix" in {
        p["name"] for p in client.get("/openapi.json").json()["paths"]["/jobs"]["get"]["parameters"]
    }

    short = client.get(f"/jobs/{first[:8]}")  # /jobs/{id} takes the whole id only
    assert short.status_code == 404
    assert short.json()["detail"] == (
        f"No job '{first[:8]}': that is not a job id (job ids are UUIDs such as "
        "0b7c2f9e-5d1a-4c3e-9f8b-2a6d4e1c7b90, as POST /invoke?mode=async answers)"
    )
    unknown = "0" * 8 + first[8:]
    gone = client.get(f"/jobs/{unknown}")
    assert gone.status_code == 404
    assert gone.json()["detail"] == (
        f"No job '{unknown}' on this server: it never existed, or it finished more than 1h ago "
        "and was forgotten (ZSERVE_JOB_TTL_S)"
    )
    assert client.get("/status").json()["jobs"] == {"ttl_s": 3600.0, "max_count": 10000}


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=501", 422),
        ("limit=0", 422),
        ("status=bogus", 422),
        ("cursor=%%%", 400),
        ("prefix=", 422),
        ("prefix=" + "a" * 37, 422),
    ],
)
def test_bad_job_listings_are_refused(make_client: Any, query: str, status: int) -> None:
    client = make_client(WEATHER)
    response = client.get(f"/jobs?{query}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


def test_large_json_is_gzipped_when_accepted_streams_never(make_client: Any) -> None:
    client = make_client(WEATHER)
    plain = client.get("/openapi.json", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = client.get("/openapi.json", headers={"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json() == plain.json()  # httpx decodes it
    small = client.get("/health", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers
    job_id, _ = finished_job(client)
    stream = client.get(f"/stream/{job_id}", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in stream.headers
