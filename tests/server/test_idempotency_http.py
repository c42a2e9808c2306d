"""``Idempotency-Key`` on ``POST /invoke?mode=async`` and ``WS /stream``, in process (one worker,
the memory broker): a repeat of the request returns the first job, another request with the key is
409, a bad key 400 (sync invokes too), and sync invokes otherwise ignore the header. Across
hosts: tests/e2e."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.server.test_http import assert_problem
from tests.server.waiting import wait_finished

SLOW = "zserve.examples.slow:slow_pipeline"
STREAMING = "zserve.examples.streaming:streaming_pipeline"
ASYNC = "/invoke?mode=async"


def submit(client: Any, body: Any, key: str | bytes | None, **kw: Any) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    content = body if isinstance(body, str) else json.dumps(body)
    return client.post(ASYNC, content=content, headers={**headers,
                       "Content-Type": "application/json"}, **kw)  # fmt: skip


def test_a_repeated_submit_returns_the_first_job_whatever_its_state(make_client: Any) -> None:
    client = make_client(SLOW)
    body = {"parameters": {"delay": 0.05, "tag": "once"}}
    first = submit(client, body, "order-42")
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    job_id = first.json()["job_id"]

    # the same request, its keys in another order and spaced otherwise: the same job
    again = submit(client, '{ "parameters" : {"tag": "once", "delay": 0.05} }', "order-42")
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"] == f"/jobs/{job_id}"
    assert {k: v for k, v in again.json().items() if k != "status"} == {
        k: v for k, v in first.json().items() if k != "status"
    }
    # the key as a quoted string (the IETF draft's form) is the same key
    quoted = submit(client, body, '"order-42"')
    assert quoted.json()["job_id"] == job_id

    done = wait_finished(client, job_id)
    assert done["status"] == "completed" and done["outputs"] == {"tag": "once"}
    late = submit(client, body, "order-42")
    assert late.status_code == 202 and late.json()["job_id"] == job_id
    assert late.json()["status"] == "completed" and late.headers["idempotent-replayed"] == "true"
    assert [j["job_id"] for j in client.get("/jobs").json()["jobs"]] == [job_id]

    # another key, or none, is another job
    other = submit(client, body, "order-43").json()["job_id"]
    plain = submit(client, body, None).json()["job_id"]
    assert len({job_id, other, plain}) == 3


def test_the_key_with_another_request_is_409_and_starts_nothing(make_client: Any) -> None:
    client = make_client(SLOW)
    job_id = submit(client, {"parameters": {"delay": 0.01}}, "k1").json()["job_id"]
    for changed in (
        {"parameters": {"delay": 0.02}},
        {"parameters": {"delay": 0.01}, "timeout_s": 30},
        {"parameters": {"delay": 0.01}, "capture_override": {"mode": "none"}},
    ):
        doc = assert_problem(submit(client, changed, "k1"), 409)
        assert doc["type"].endswith("/idempotency-key-reused") and doc["job_id"] == job_id
        assert "new key" in doc["detail"] and "'k1'" in doc["detail"]
    assert [j["job_id"] for j in client.get("/jobs").json()["jobs"]] == [job_id]


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "caf\xe9".encode("latin-1"), "tab\there", "nul\x7f"],
    ids=["empty", "too-long", "not-ascii", "tab", "del"],
)
def test_a_bad_key_is_400_naming_the_rule(make_client: Any, key: str | bytes) -> None:
    client = make_client(SLOW)
    body = {"parameters": {"delay": 0}}
    sync = client.post("/invoke", json=body, headers={"Idempotency-Key": key})
    for refused in (submit(client, body, key), sync):  # the form is checked on sync ones too
        doc = assert_problem(refused, 400)
        assert "Idempotency-Key must be 1 to 255 printable ASCII characters" in doc["detail"]
    assert client.get("/jobs").json()["jobs"] == []


def test_the_longest_key_and_one_with_spaces_are_keys(make_client: Any) -> None:
    client = make_client(SLOW)
    for key in ("~" * 255, "order 42 / retry #1"):
        first = submit(client, {"parameters": {"delay": 0}}, key).json()["job_id"]
        assert submit(client, {"parameters": {"delay": 0}}, key).json()["job_id"] == first


def test_sync_invokes_ignore_the_header(make_client: Any) -> None:
    client = make_client(SLOW)
    headers = {"Idempotency-Key": "sync-key"}
    bodies = [{"parameters": {"delay": 0, "tag": t}} for t in ("a", "b")]
    answers = [client.post("/invoke", json=b, headers=headers) for b in bodies]
    assert [a.json()["outputs"]["tag"] for a in answers] == ["a", "b"]
    # and the key stays free for an async job
    assert "idempotent-replayed" not in submit(client, bodies[0], "sync-key").headers


def test_a_websocket_stream_with_a_key_follows_the_first_job(make_client: Any) -> None:
    client = make_client(STREAMING)
    body = {"parameters": {"words": 3, "delay": 0.001}}
    runs = []
    for _ in range(2):
        with client.websocket_connect("/stream", headers={"Idempotency-Key": "ws-1"}) as ws:
            ws.send_json(body)
            events = [ws.receive_json()]
            while events[-1]["event"] != "job.completed":
                events.append(ws.receive_json())
        runs.append(events)
    assert runs[0] == runs[1]  # the second connection replays the first job from its start
    assert [j["mode"] for j in client.get("/jobs").json()["jobs"]] == ["stream"]
    # the key of a stream is not the key of an async job of the same body
    doc = assert_problem(submit(client, body, "ws-1"), 409)
    assert doc["job_id"] == runs[0][0]["job_id"]


def test_the_openapi_document_names_the_header(make_client: Any) -> None:
    doc = make_client(SLOW).get("/openapi.json").json()
    invoke = doc["paths"]["/invoke"]["post"]
    [param] = [p for p in invoke["parameters"] if p["in"] == "header"]
    assert param["name"] == "Idempotency-Key" and param["schema"]["maxLength"] == 255
    assert "Idempotent-Replayed" in invoke["responses"]["202"]["headers"]
    assert {"400", "409"} <= invoke["responses"].keys()
