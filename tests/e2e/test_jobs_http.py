"""Async jobs, cancellation and live progress against real servers (1 and 2 workers), with
real clients: httpx-sse for SSE and the websockets package for WebSocket."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import psutil
import pytest
from httpx_sse import connect_sse

from tests.e2e.conftest import fresh, sse_events, wait_for, wait_status
from zserve.client import Client

STREAMING = "zserve.examples.streaming:streaming_pipeline"
SLOW = "zserve.examples.slow:slow_pipeline"
FAILING = "zserve.examples.failing:failing_pipeline"


def submit(url: str, params: dict[str, Any], **body: Any) -> str:
    response = httpx.post(f"{url}/invoke?mode=async", json={"parameters": params, **body})
    assert response.status_code == 202, response.text
    doc = response.json()
    assert doc["status"] == "queued"
    assert doc["links"] == {"job": f"/jobs/{doc['job_id']}", "stream": f"/stream/{doc['job_id']}"}
    job_id: str = doc["job_id"]
    return job_id


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [f"{e['event']}:{e.get('step', '')}" for e in events]


def test_event_order_for_a_streaming_pipeline(serve: Any) -> None:
    server = serve(STREAMING)
    job_id = submit(server.url, {"words": 4, "delay": 0.01})
    events = sse_events(server.url, job_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert kinds(events) == [
        "job.queued:", "job.started:",
        "step.started:generate", *["step.chunk:generate"] * 4, "step.completed:generate",
        "step.started:summarize", *["step.progress:summarize"] * 3, "step.completed:summarize",
        "job.completed:",
    ]  # fmt: skip
    assert [e["chunk"] for e in events if e["event"] == "step.chunk"] == [
        "word-0",
        "word-1",
        "word-2",
        "word-3",
    ]
    assert events[-1]["outputs"] == {
        "summary": {"tokens": 4, "text": "word-0 word-1 word-2 word-3"}
    }
    assert all(e["job_id"] == job_id and e["ts"] > 0 for e in events)
    job = httpx.get(f"{server.url}/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["mode"] == "async"
    assert [(s["name"], s["status"]) for s in job["steps"]] == [
        ("generate", "completed"),
        ("summarize", "completed"),
    ]
    assert all(s["duration_ms"] > 0 for s in job["steps"])
    assert job["outputs"] == events[-1]["outputs"]


def test_multi_step_pipeline_and_a_late_subscriber_gets_the_whole_history(serve: Any) -> None:
    server = serve("zserve.examples.weather:weather_pipeline")
    job_id = submit(server.url, {"city": "Paris"})
    wait_status(server.url, job_id, "completed")
    events = sse_events(server.url, job_id)  # after the job finished
    assert kinds(events) == [
        "job.queued:",
        "job.started:",
        "step.started:fetch_data",
        "step.completed:fetch_data",
        "step.started:analyze_data",
        "step.completed:analyze_data",
        "job.completed:",
    ]


def test_resume_with_last_event_id_gets_exactly_the_missed_events(serve: Any) -> None:
    server = serve(STREAMING)
    job_id = submit(server.url, {"words": 6, "delay": 0.01})
    everything = sse_events(server.url, job_id)
    for cut in (1, 4, len(everything) - 1):
        rest = sse_events(server.url, job_id, last_event_id=cut)
        assert rest == everything[cut:]
    # a connection dropped mid-stream, then resumed
    job_id = submit(server.url, {"words": 6, "delay": 0.05})
    seen: list[dict[str, Any]] = []
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, "GET", f"{server.url}/stream/{job_id}") as source,
    ):
        for sse in source.iter_sse():
            seen.append(json.loads(sse.data))
            if sse.event == "step.chunk":
                break  # drop the connection
    rest = sse_events(server.url, job_id, last_event_id=seen[-1]["seq"])
    combined = seen + rest
    assert [e["seq"] for e in combined] == list(range(1, len(combined) + 1))
    assert combined[-1]["event"] == "job.completed"


def test_idle_streams_get_comment_pings(serve: Any) -> None:
    server = serve(SLOW, ZSERVE_SSE_PING_S="0.1")
    job_id = submit(server.url, {"delay": 0.6})
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{server.url}/stream/{job_id}") as response,
    ):
        text = "".join(response.iter_text())
    assert text.count(": ping") >= 2
    assert text.rstrip().endswith("}") and "event: job.completed" in text


def test_cancel_queued_running_and_finished_jobs(serve: Any) -> None:
    server = serve(SLOW, ZSERVE_MAX_CONCURRENCY="1")
    running = submit(server.url, {"delay": 30})
    queued = submit(server.url, {"delay": 30})
    wait_status(server.url, running, "running")
    assert httpx.get(f"{server.url}/jobs/{queued}").json()["status"] == "queued"

    response = httpx.post(f"{server.url}/jobs/{queued}/cancel")
    assert response.json() == {"job_id": queued, "status": "cancelled"}
    response = httpx.post(f"{server.url}/jobs/{running}/cancel")
    assert response.json() == {"job_id": running, "status": "cancelled"}
    job = httpx.get(f"{server.url}/jobs/{running}").json()
    assert job["steps"] == [{"name": "wait", "status": "cancelled", "duration_ms": None}]
    events = sse_events(server.url, running)
    assert events[-1]["event"] == "job.cancelled" and events[-1]["steps_completed"] == []
    assert sum(e["event"].startswith("job.") and e["event"] != "job.queued"
               and e["event"] != "job.started" for e in events) == 1  # fmt: skip

    finished = httpx.post(f"{server.url}/jobs/{running}/cancel")
    assert finished.status_code == 409
    assert finished.headers["content-type"] == "application/problem+json"
    assert "already cancelled" in finished.json()["detail"]


def test_cancel_keeps_the_steps_that_completed(serve: Any) -> None:
    server = serve(STREAMING)
    job_id = submit(server.url, {"words": 2, "delay": 0.5})
    wait_for(  # summarize runs: generate has completed
        lambda: httpx.get(f"{server.url}/jobs/{job_id}").json()["steps"][1]["status"] == "running",
        "the second step to run",
        every=0.02,
    )
    assert httpx.post(f"{server.url}/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    job = httpx.get(f"{server.url}/jobs/{job_id}").json()
    assert [(s["name"], s["status"]) for s in job["steps"]] == [
        ("generate", "completed"),
        ("summarize", "cancelled"),
    ]
    assert sse_events(server.url, job_id)[-1]["steps_completed"] == ["generate"]


def test_unknown_job_is_404(serve: Any) -> None:
    server = serve(SLOW)
    for method, path in (("GET", "/jobs/nope"), ("POST", "/jobs/nope/cancel"),
                         ("GET", "/stream/nope")):  # fmt: skip
        response = httpx.request(method, f"{server.url}{path}")
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"


def test_jobs_listing_and_sync_jobs(serve: Any) -> None:
    server = serve("zserve.examples.weather:weather_pipeline")
    sync = httpx.post(f"{server.url}/invoke", json={"parameters": {"city": "a"}}).json()
    async_id = submit(server.url, {"city": "b"})
    wait_status(server.url, async_id, "completed")
    listing = httpx.get(f"{server.url}/jobs").json()
    assert [j["job_id"] for j in listing["jobs"]] == [async_id, sync["job_id"]]
    assert listing["next"] is None
    assert "outputs" not in listing["jobs"][0]  # summaries: outputs are on /jobs/{id}
    job = httpx.get(f"{server.url}/jobs/{sync['job_id']}").json()
    assert job["mode"] == "sync" and job["status"] == "completed"
    assert [s["status"] for s in job["steps"]] == ["completed", "completed"]
    only = httpx.get(f"{server.url}/jobs", params={"status": "completed", "limit": 1}).json()
    assert len(only["jobs"]) == 1
    bad = httpx.get(f"{server.url}/jobs", params={"status": "nope"})
    assert bad.status_code == 422 and "status" in bad.json()["detail"]
    assert httpx.get(f"{server.url}/stream/{sync['job_id']}").status_code == 404


def test_429_when_running_and_queue_are_full(serve: Any) -> None:
    server = serve(SLOW, ZSERVE_MAX_CONCURRENCY="1", ZSERVE_MAX_QUEUE="1")
    first = submit(server.url, {"delay": 30})
    wait_status(server.url, first, "running")
    second = submit(server.url, {"delay": 30})
    response = httpx.post(f"{server.url}/invoke?mode=async", json={"parameters": {"delay": 1}})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"
    sync = httpx.post(f"{server.url}/invoke", json={"parameters": {"delay": 0}})
    assert sync.status_code == 429
    for job_id in (first, second):
        httpx.post(f"{server.url}/jobs/{job_id}/cancel")
    assert httpx.post(f"{server.url}/invoke", json={"parameters": {"delay": 0}}).status_code == 200


def test_timeouts_sync_504_and_async_job_failed(serve: Any) -> None:
    server = serve(SLOW)
    sync = httpx.post(f"{server.url}/invoke", json={"parameters": {"delay": 5}, "timeout_s": 0.1})
    assert sync.status_code == 504
    job = httpx.get(f"{server.url}/jobs/{sync.json()['job_id']}").json()
    assert job["status"] == "failed" and job["error"]["reason"] == "timeout"
    job_id = submit(server.url, {"delay": 5}, timeout_s=0.1)
    events = sse_events(server.url, job_id)
    assert events[-1]["event"] == "job.failed"
    assert events[-1]["error"]["reason"] == "timeout"
    assert wait_status(server.url, job_id, "failed")["error"]["reason"] == "timeout"


def test_a_failing_step_fails_the_job_naming_the_step(serve: Any) -> None:
    server = serve(FAILING)
    job_id = submit(server.url, {"value": 9})
    events = sse_events(server.url, job_id)
    assert kinds(events)[-3:] == ["step.started:explode", "step.failed:explode", "job.failed:"]
    assert events[-1]["error"] == {
        "reason": "step_failed", "step": "explode",
        "message": "Step 'explode' raised ValueError: cannot process value 9",
    }  # fmt: skip
    assert events[-2]["error"] == {"type": "ValueError", "message": "cannot process value 9"}


def test_a_client_that_disconnects_does_not_disturb_the_job(serve: Any) -> None:
    server = serve(STREAMING)
    job_id = submit(server.url, {"words": 5, "delay": 0.05})
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(client, "GET", f"{server.url}/stream/{job_id}") as source,
    ):
        next(iter(source.iter_sse()))
    assert wait_status(server.url, job_id, "completed", "failed")["status"] == "completed"


def test_websocket_invoke_events_and_cancel(serve: Any) -> None:
    from websockets.sync.client import connect

    server = serve(STREAMING)
    ws_url = server.url.replace("http://", "ws://") + "/stream"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"parameters": {"words": 3, "delay": 0.01}}))
        events = [json.loads(m) for m in ws]
    assert events[0]["event"] == "job.queued" and events[-1]["event"] == "job.completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert ws.close_code == 1000

    with connect(ws_url) as ws:
        ws.send(json.dumps({"parameters": {"words": 100, "delay": 0.05}}))
        seen = []
        for message in ws:
            event = json.loads(message)
            seen.append(event)
            if event["event"] == "step.chunk" and event["chunk"] == "word-1":
                ws.send(json.dumps({"action": "cancel"}))
    assert seen[-1]["event"] == "job.cancelled"
    assert len([e for e in seen if e["event"] == "step.chunk"]) < 100
    job = httpx.get(f"{server.url}/jobs/{seen[0]['job_id']}").json()
    assert job["status"] == "cancelled"


def test_websocket_attach_and_bad_messages(serve: Any) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = serve(STREAMING)
    ws_url = server.url.replace("http://", "ws://") + "/stream"
    job_id = submit(server.url, {"words": 3, "delay": 0.05})
    with connect(ws_url) as ws:
        ws.send(json.dumps({"job_id": job_id}))
        events = [json.loads(m) for m in ws]
    assert events[0]["seq"] == 1 and events[-1]["event"] == "job.completed"

    for message, code in (
        (b"\x00binary", 1003),
        ("not json", 1003),
        (json.dumps({"parameters": {"words": "many"}}), 1008),
        (json.dumps({"job_id": "nope"}), 1008),
    ):
        with connect(ws_url) as ws:
            ws.send(message)
            replies = []
            with pytest.raises(ConnectionClosed):
                while True:
                    replies.append(json.loads(ws.recv()))
            assert ws.close_code == code, message
            assert replies and replies[0]["event"] == "error"


def test_jobs_are_dropped_after_their_retention(serve: Any) -> None:
    server = serve("zserve.examples.weather:weather_pipeline", ZSERVE_JOB_MAX_COUNT="3",
                   ZSERVE_JOB_TTL_S="0.5")  # fmt: skip
    ids = [submit(server.url, {"city": f"c{i}"}) for i in range(5)]
    wait_for(
        lambda: httpx.get(f"{server.url}/jobs").json()["jobs"] == [],
        "every job to be dropped",
        deadline_s=10,
        every=0.1,
    )
    assert httpx.get(f"{server.url}/jobs").json()["jobs"] == []
    assert httpx.get(f"{server.url}/jobs/{ids[0]}").status_code == 404


def test_two_workers_one_truth_poll_stream_and_cancel(serve: Any) -> None:
    server = serve(SLOW, workers=2)
    pids = set()
    for i in range(12):
        pids.add(fresh(server.url, "GET", "/status").json()["pid"])
        job_id = fresh(
            server.url,
            "POST",
            "/invoke?mode=async",
            json={"parameters": {"delay": 0.05, "tag": f"t{i}"}},
        ).json()["job_id"]
        for _ in range(3):  # any worker can read it
            doc = fresh(server.url, "GET", f"/jobs/{job_id}").json()
            assert doc["job_id"] == job_id and doc["status"] in ("queued", "running", "completed")
        events = sse_events(server.url, job_id)
        assert events[-1]["event"] == "job.completed"
        assert events[-1]["outputs"] == {"tag": f"t{i}"}
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len(pids) == 2, "both workers should have answered"

    cancelled = 0
    for _ in range(6):  # cancel through whichever worker answers, often not the owner
        job_id = fresh(
            server.url, "POST", "/invoke?mode=async", json={"parameters": {"delay": 30}}
        ).json()["job_id"]
        wait_status(server.url, job_id, "running")
        response = fresh(server.url, "POST", f"/jobs/{job_id}/cancel")
        assert response.status_code == 200
        assert wait_status(server.url, job_id, "cancelled")["status"] == "cancelled"
        assert sse_events(server.url, job_id)[-1]["event"] == "job.cancelled"
        cancelled += 1
    assert cancelled == 6
    metrics = fresh(server.url, "GET", "/status").json()
    assert metrics["broker"]["kind"] == "sqlite"


def test_a_job_whose_worker_died_fails_with_worker_lost(serve: Any) -> None:
    server = serve(SLOW, workers=2)
    job_id = submit(server.url, {"delay": 60})
    job = wait_status(server.url, job_id, "running")
    owner = int(job["worker"].split("-")[0])
    assert owner in [c.pid for c in psutil.Process(server.proc.pid).children()]
    os.kill(owner, signal.SIGKILL)
    started = time.monotonic()
    job = wait_status(server.url, job_id, "failed", deadline_s=30)
    assert job["error"]["reason"] == "worker_lost"
    assert time.monotonic() - started < 15
    events = sse_events(server.url, job_id)
    assert events[-1]["event"] == "job.failed"
    assert events[-1]["error"]["reason"] == "worker_lost"


def test_finished_jobs_beyond_the_count_are_dropped_oldest_first(serve: Any) -> None:
    server = serve("zserve.examples.weather:weather_pipeline", ZSERVE_JOB_MAX_COUNT="3")
    ids = [submit(server.url, {"city": f"c{i}"}) for i in range(6)]

    def three_left() -> list[str] | None:
        listing = [j["job_id"] for j in httpx.get(f"{server.url}/jobs").json()["jobs"]]
        return listing if len(listing) == 3 else None

    # pruning runs every few seconds
    listing = wait_for(three_left, "3 jobs left", deadline_s=20, every=0.1)
    assert listing == ids[::-1][:3]
    for i in range(5):  # sync jobs are bounded as they are added
        httpx.post(f"{server.url}/invoke", json={"parameters": {"city": f"s{i}"}})
    modes = [j["mode"] for j in httpx.get(f"{server.url}/jobs").json()["jobs"]]
    assert modes.count("sync") == 3


def test_sigterm_drains_jobs_and_streams_end_with_their_terminal_event(serve: Any) -> None:
    import threading

    server = serve(SLOW, ZSERVE_MAX_CONCURRENCY="1", ZSERVE_GRACE_S="5")
    running = submit(server.url, {"delay": 1.0, "tag": "finished-in-grace"})
    wait_status(server.url, running, "running")
    queued = submit(server.url, {"delay": 1.0})
    streams: dict[str, list[dict[str, Any]]] = {}

    def follow(job_id: str) -> None:
        streams[job_id] = sse_events(server.url, job_id)

    threads = [threading.Thread(target=follow, args=(j,)) for j in (running, queued)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # both streams are open
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert streams[running][-1]["event"] == "job.completed"
    assert streams[running][-1]["outputs"] == {"tag": "finished-in-grace"}
    assert streams[queued][-1]["event"] == "job.failed"
    assert streams[queued][-1]["error"]["reason"] == "shutdown"
    assert server.proc.wait(30) == 0


def test_a_job_longer_than_the_grace_period_fails_with_reason_shutdown(serve: Any) -> None:
    server = serve(SLOW, ZSERVE_GRACE_S="0.3")
    job_id = submit(server.url, {"delay": 30})
    wait_status(server.url, job_id, "running")
    result: list[list[dict[str, Any]]] = []
    import threading

    thread = threading.Thread(target=lambda: result.append(sse_events(server.url, job_id)))
    thread.start()
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(30)
    assert result and result[0][-1]["event"] == "job.failed"
    assert result[0][-1]["error"]["reason"] == "shutdown"
    assert server.proc.wait(30) == 0


def test_two_cancel_requests_at_once_still_end_the_job(serve: Any) -> None:
    import threading

    server = serve(STREAMING, workers=2)
    for _ in range(8):
        job_id = submit(server.url, {"words": 100000, "delay": 0.002})  # minutes long
        wait_status(server.url, job_id, "running")
        threads = [threading.Thread(target=fresh, args=(server.url, "POST",
                                                        f"/jobs/{job_id}/cancel"))
                   for _ in range(2)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert wait_status(server.url, job_id, "cancelled", "completed")["status"] == "cancelled"
        assert sse_events(server.url, job_id)[-1]["event"] == "job.cancelled"


def test_a_cancelled_sync_step_keeps_its_slot_until_its_thread_returns(serve: Any) -> None:
    server = serve("tests.server.pipelines:blocking", ZSERVE_MAX_CONCURRENCY="1")
    first = submit(server.url, {"seconds": 1.5})
    wait_status(server.url, first, "running")
    assert httpx.post(f"{server.url}/jobs/{first}/cancel").json()["status"] == "cancelled"
    second = submit(server.url, {"seconds": 0})
    # the first job's thread still sleeps: the second waits for the slot, it does not overlap
    assert httpx.get(f"{server.url}/jobs/{second}").json()["status"] == "queued"
    assert wait_status(server.url, second, "completed")["status"] == "completed"


def test_resume_past_the_end_ends_the_stream_and_bad_ids_are_400(serve: Any) -> None:
    server = serve("zserve.examples.weather:weather_pipeline")
    job_id = submit(server.url, {"city": "x"})
    wait_status(server.url, job_id, "completed")
    ended = httpx.get(f"{server.url}/stream/{job_id}", headers={"Last-Event-ID": "9999"})
    assert ended.status_code == 204 and ended.content == b""
    with Client(server.url) as client:  # the client takes a 204 as the end
        assert list(client.events(job_id, last_event_id=9999)) == []
    for bad in (b"abc", b"-1", "\u00b2".encode(), b"99999999999999999999999"):
        response = httpx.get(f"{server.url}/stream/{job_id}", headers={"Last-Event-ID": bad})
        assert response.status_code == 400, bad


def test_a_sync_invoke_cancelled_through_the_jobs_api_gets_a_409_problem(serve: Any) -> None:
    import threading

    server = serve(SLOW)
    answer: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answer.append(
            httpx.post(f"{server.url}/invoke", json={"parameters": {"delay": 30}}, timeout=60)
        )
    )
    thread.start()

    def running_job() -> str | None:
        running = httpx.get(f"{server.url}/jobs", params={"status": "running"}).json()["jobs"]
        return running[0]["job_id"] if running else None

    job_id = wait_for(running_job, "the sync job to run", every=0.02)
    assert job_id is not None
    assert httpx.post(f"{server.url}/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    thread.join(30)
    assert answer[0].status_code == 409
    assert answer[0].headers["content-type"] == "application/problem+json"
    assert answer[0].json()["title"] == "Job cancelled"
    # logged as one INFO line, without a traceback
    lines = wait_for(
        lambda: [line for line in server.output().splitlines() if f"Job {job_id} " in line],
        "the cancel's log line",
    )
    assert len(lines) == 1 and lines[0].startswith("INFO:") and "cancelled" in lines[0]
    assert "Traceback" not in server.output()


def test_sigterm_lets_a_websocket_stream_finish_its_job(serve: Any) -> None:
    from websockets.sync.client import connect

    server = serve(SLOW, ZSERVE_GRACE_S="10")
    ws_url = server.url.replace("http://", "ws://") + "/stream"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"parameters": {"delay": 1.0, "tag": "kept"}}))
        events = []
        for message in ws:
            events.append(json.loads(message))
            if events[-1]["event"] == "step.started":
                server.proc.send_signal(signal.SIGTERM)
    assert events[-1]["event"] == "job.completed" and events[-1]["outputs"] == {"tag": "kept"}
    assert ws.close_code == 1000
    assert server.proc.wait(30) == 0


def test_async_jobs_count_in_the_metrics(serve: Any) -> None:
    server = serve(FAILING)
    for value in (1, 2):
        job_id = submit(server.url, {"value": value})
        wait_status(server.url, job_id, "failed")
    doc = httpx.get(f"{server.url}/metrics").json()
    assert doc["invocations"]["by_status"]["failed"] == 2
    assert doc["jobs"]["by_status"] == {"failed": 2}
