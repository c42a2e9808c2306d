"""One-request streaming against real servers: ``POST /invoke`` with ``Accept:
text/event-stream`` sends a generator step's chunks while the job runs (a file-gated step: no
timing), a client that leaves cancels the job, a full server refuses with 429, and
``Client.invoke_stream`` / ``zserve invoke --stream`` use it, or fall back to submit and
``GET /stream/{id}`` with a server that does not offer it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Running, ServerProcess, cli, wait_for, wait_status
from zserve.client import AsyncClient, Client

pytestmark = pytest.mark.slow

GATED = "tests.server.pipelines:gated"
EVENTS = {"Accept": "text/event-stream"}
#: A server as an earlier zserve ran it: ``GET /info`` names no features.
OLDER = (
    "-c",
    "import zserve.server.service as s; info = s.Service.info; "
    "s.Service.info = lambda self: {k: v for k, v in info(self).items() if k != 'features'}; "
    "from zserve.server.boot import main; main()",
)


def sse_lines(response: httpx.Response) -> Iterator[dict[str, Any] | str]:
    """The events of a streamed answer as they come (a ``": ping"`` comment as that string)."""
    data = None
    for line in response.iter_lines():
        if line.startswith(":"):
            yield line
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif not line and data is not None:
            yield json.loads(data)
            data = None


def next_event(lines: Iterator[dict[str, Any] | str], kind: str) -> dict[str, Any]:
    for item in lines:
        if isinstance(item, dict) and item["event"] == kind:
            return item
    raise AssertionError(f"the stream ended without a {kind} event")


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


def test_chunks_arrive_while_the_job_runs(serve: Any, gate: Path) -> None:
    server = serve(GATED)  # pings every 15 s: none comes to push the events out
    body = {"parameters": {"gate": str(gate), "words": 2}}
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("POST", "/invoke", json=body, headers=EVENTS) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        job_id = response.headers["x-job-id"]
        lines = sse_lines(response)
        first = next_event(lines, "step.chunk")  # within the read timeout, while the job waits
        assert first["chunk"] == "first" and first["job_id"] == job_id
        # the job is still running (it waits for the gate), and can be looked up by its id
        job = httpx.get(f"{server.url}/jobs/{job_id}").json()
        assert job["status"] == "running" and job["mode"] == "sync"
        gate.touch()
        rest = [item for item in lines if isinstance(item, dict)]
    assert [e["event"] for e in rest] == ["step.chunk", "step.chunk", "step.completed",
                                          "job.completed"]  # fmt: skip
    assert rest[-1]["outputs"] == {"output": ["first", "word-0", "word-1"]}
    assert wait_status(server.url, job_id, "completed")["steps"][0]["status"] == "completed"


def test_pings_keep_a_quiet_stream_open(serve: Any, gate: Path) -> None:
    server = serve(GATED, ZSERVE_SSE_PING_S="0.05")
    body = {"parameters": {"gate": str(gate), "words": 0}}
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/invoke", json=body, headers=EVENTS) as response,
    ):
        lines = sse_lines(response)
        next_event(lines, "step.chunk")
        assert next(lines) == ": ping"  # nothing happens while the job waits for the gate
        gate.touch()
        assert next_event(lines, "job.completed")["outputs"] == {"output": ["first"]}


def test_a_client_that_leaves_cancels_the_job(serve: Any, gate: Path) -> None:
    server = serve(GATED)
    body = {"parameters": {"gate": str(gate)}}
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/invoke", json=body, headers=EVENTS) as response,
    ):
        job_id = response.headers["x-job-id"]
        next_event(sse_lines(response), "step.chunk")
    # the connection is closed here: the server cancels the job
    job = wait_status(server.url, job_id, "cancelled", "completed", "failed")
    assert job["status"] == "cancelled"
    assert job["steps"] == [{"name": "gated_words", "status": "cancelled", "duration_ms": None}]
    # and goes on serving
    gate.touch()
    ok = httpx.post(f"{server.url}/invoke", json={"parameters": {"gate": str(gate)}}, timeout=30)
    assert ok.json()["outputs"]["output"] == ["first", "word-0", "word-1"]


def test_cancel_through_the_jobs_api_ends_the_stream_with_job_cancelled(
    serve: Any, gate: Path
) -> None:
    server = serve(GATED)
    body = {"parameters": {"gate": str(gate)}}
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/invoke", json=body, headers=EVENTS) as response,
    ):
        job_id = response.headers["x-job-id"]
        lines = sse_lines(response)
        next_event(lines, "step.chunk")
        cancelled = httpx.post(f"{server.url}/jobs/{job_id}/cancel", timeout=30).json()
        assert cancelled == {"job_id": job_id, "status": "cancelled"}
        end = next_event(lines, "job.cancelled")
    assert end["steps_completed"] == [] and end["run_id"] is None


def test_a_full_server_refuses_with_a_429_problem(serve: Any, gate: Path) -> None:
    server = serve(GATED, ZSERVE_MAX_CONCURRENCY="1", ZSERVE_MAX_QUEUE="0")
    body = {"parameters": {"gate": str(gate)}}
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/invoke", json=body, headers=EVENTS) as response,
    ):
        lines = sse_lines(response)
        next_event(lines, "step.chunk")  # it holds the only slot
        refused = httpx.post(f"{server.url}/invoke", json=body, headers=EVENTS)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "1"
        gate.touch()
        assert next_event(lines, "job.completed")["outputs"]["output"][0] == "first"


def test_the_clients_stream_one_request(serve: Any, gate: Path) -> None:
    server = serve(GATED)
    gate.touch()
    with Client(server.url) as client:
        events = list(client.invoke_stream({"gate": str(gate), "words": 1}))
        assert client.offers("invoke-stream")
    assert [e["event"] for e in events] == [
        "job.queued", "job.started", "step.started", "step.chunk", "step.chunk",
        "step.completed", "job.completed",
    ]  # fmt: skip
    assert events[-1]["outputs"] == {"output": ["first", "word-0"]}
    job = httpx.get(f"{server.url}/jobs/{events[0]['job_id']}").json()
    assert job["mode"] == "sync"  # one request, not a job submitted and followed

    async def streamed() -> list[dict[str, Any]]:
        async with AsyncClient(server.url) as client:
            return [e async for e in client.invoke_stream({"gate": str(gate)})]

    events = asyncio.run(streamed())
    assert events[-1]["event"] == "job.completed"
    assert httpx.get(f"{server.url}/jobs/{events[0]['job_id']}").json()["mode"] == "sync"
    with Client(server.url) as client, pytest.raises(Exception, match="words") as refused:
        next(client.invoke_stream({"gate": str(gate), "words": "x"}))
    assert type(refused.value).__name__ == "InvalidParameters"


def test_leaving_the_clients_stream_early_cancels_the_job(serve: Any, gate: Path) -> None:
    server = serve(GATED)
    with Client(server.url) as client:
        events = client.invoke_stream({"gate": str(gate)})
        job_id = next(events)["job_id"]
        assert next(e for e in events if e["event"] == "step.chunk")["chunk"] == "first"
        events.close()
    assert wait_status(server.url, job_id, "cancelled", "completed")["status"] == "cancelled"


def test_zserve_invoke_stream_reads_one_request(
    serve: Any, gate: Path, running: Callable[..., Running]
) -> None:
    server = serve(GATED)
    proc = running("invoke", "--url", server.url, "--stream", "-p", f"gate={gate}")
    job_id = proc.wait_line(r"^1 job\.queued ").split()[2]
    proc.wait_line(r"^\d+ step\.chunk gated_words first$")
    job = httpx.get(f"{server.url}/jobs/{job_id}").json()
    assert job["status"] == "running" and job["mode"] == "sync"
    gate.touch()
    code, stderr = proc.finish()
    assert code == 0, stderr
    assert proc.lines[-1].split(maxsplit=2)[1:] == [
        "job.completed",
        '{"output": ["first", "word-0", "word-1"]}',
    ]
    # --jsonl and --json print the events as today
    lines = cli("invoke", "--url", server.url, "--stream", "--jsonl", "-p", f"gate={gate}")
    kinds = [json.loads(line)["event"] for line in lines.stdout.splitlines()]
    assert kinds[0] == "job.queued" and kinds[-1] == "job.completed"
    doc = json.loads(cli("invoke", "--url", server.url, "--stream", "--json", "-p",
                         f"gate={gate}").stdout)  # fmt: skip
    assert doc["status"] == "completed" and doc["events"][-1]["event"] == "job.completed"
    refused = cli("invoke", "--url", server.url, "--stream", "-p", "gate=x", "-p", "words=y",
                  check=False)  # fmt: skip
    assert refused.returncode == 2 and "--param words" in refused.stderr


def test_ctrl_c_in_zserve_invoke_stream_closes_the_request_and_cancels_the_job(
    serve: Any, gate: Path, running: Callable[..., Running]
) -> None:
    server = serve(GATED)
    proc = running("invoke", "--url", server.url, "--stream", "--jsonl", "-p", f"gate={gate}")
    job_id = json.loads(proc.wait_line(r'"job\.queued"'))["job_id"]
    proc.wait_line(r'"step\.chunk"')
    proc.proc.send_signal(signal.SIGINT)
    code, stderr = proc.finish()
    assert code == 130, stderr
    assert f"Interrupted: job {job_id} is cancelled" in stderr
    assert wait_status(server.url, job_id, "cancelled", "completed")["status"] == "cancelled"


def test_with_a_server_that_does_not_offer_it_the_client_submits_and_follows(
    deployed: Callable[..., dict[str, Any]],
    servers: Callable[..., ServerProcess],
    gate: Path,
) -> None:
    deployment = deployed(GATED)["id"]
    server = servers({"ZSERVE_DEPLOYMENT_ID": deployment}, argv=OLDER)
    assert "features" not in httpx.get(f"{server.url}/info").json()
    gate.touch()
    with Client(server.url) as client:
        events = list(client.invoke_stream({"gate": str(gate)}))
        assert not client.offers("invoke-stream")
    assert events[-1]["outputs"] == {"output": ["first", "word-0", "word-1"]}
    assert httpx.get(f"{server.url}/jobs/{events[0]['job_id']}").json()["mode"] == "async"
    # the command line too, with the same output
    proc = cli("invoke", "--url", server.url, "--stream", "-p", f"gate={gate}")
    job_id = proc.stdout.splitlines()[0].split()[2]
    assert proc.stdout.splitlines()[-1].split()[1] == "job.completed"
    assert httpx.get(f"{server.url}/jobs/{job_id}").json()["mode"] == "async"
    # leaving early cancels the submitted job, as closing the answer does with a newer server
    os.remove(gate)
    with Client(server.url) as client:
        events = client.invoke_stream({"gate": str(gate)})
        job_id = next(events)["job_id"]
        next(e for e in events if e["event"] == "step.chunk")
        events.close()
    assert wait_for(
        lambda: httpx.get(f"{server.url}/jobs/{job_id}").json()["status"] == "cancelled",
        "the submitted job to be cancelled",
    )


def test_zserve_stream_follows_a_streamed_invoke_started_by_another_client(
    serve: Any, gate: Path, running: Callable[..., Running]
) -> None:
    server = serve(GATED)
    body = {"parameters": {"gate": str(gate), "words": 2}}
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/invoke", json=body, headers=EVENTS) as response,
    ):
        job_id = response.headers["x-job-id"]
        lines = sse_lines(response)
        mine: list[dict[str, Any]] = []
        for item in lines:  # up to the first chunk: the job then waits for the gate
            if isinstance(item, dict):
                mine.append(item)
                if item["event"] == "step.chunk":
                    break
        # another client follows it by its id: what it sent so far, then live
        proc = running("stream", job_id, "--url", server.url, "--jsonl")
        replayed = json.loads(proc.wait_line(r'"step\.chunk"'))
        assert replayed == mine[-1] and replayed["chunk"] == "first"
        assert httpx.get(f"{server.url}/jobs/{job_id}").json()["status"] == "running"
        gate.touch()
        mine += [item for item in lines if isinstance(item, dict)]
        code, stderr = proc.finish()
    assert code == 0, stderr
    assert [json.loads(line) for line in proc.lines] == mine
    assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
    assert mine[-1]["event"] == "job.completed"
    assert mine[-1]["outputs"] == {"output": ["first", "word-0", "word-1"]}
    # and once it has ended, the same replay to its terminal event
    again = cli("stream", job_id, "--url", server.url, "--jsonl")
    assert [json.loads(line) for line in again.stdout.splitlines()] == mine
