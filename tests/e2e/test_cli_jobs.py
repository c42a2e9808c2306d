"""Background jobs through the CLI against real detached servers: invoke --async/--stream,
jobs list|show|cancel, stream (exit codes, Ctrl-C), and the client's event stream (resume)."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.conftest import Detached, Running, cli, wait_for
from zserve import events as ev
from zserve.broker.sqlite import SQLiteBroker
from zserve.client import AsyncClient, Client
from zserve.events import Event
from zserve.records import JobRecord, JobStatus

STREAMING = "zserve.examples.streaming:streaming_pipeline"
SLOW = "zserve.examples.slow:slow_pipeline"
FAILING = "zserve.examples.failing:failing_pipeline"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def serve(detached: Detached, source: str, name: str) -> dict[str, Any]:
    """Deploy ``source`` as ``name`` and start it detached on a free port."""
    cli("deploy", source, "--name", name)
    return detached("--deployment", name)


def submit(*args: str) -> str:
    job_id = cli("invoke", "--async", *args).stdout.strip()
    assert UUID.match(job_id), job_id
    return job_id


def show(job_id: str, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cli("jobs", "show", job_id, "--json", *args).stdout)
    return doc


def test_invoke_async_prints_the_job_id_then_jobs_show_and_list(
    detached: Detached,
) -> None:
    server = serve(detached, SLOW, "slow")
    job_id = submit("-p", "delay=0.3", "-p", "tag=hello")
    accepted = json.loads(cli("invoke", "--async", "-p", "delay=0", "--json").stdout)
    assert accepted["status"] == "queued" and UUID.match(accepted["job_id"])
    assert accepted["links"] == {
        "job": f"/jobs/{accepted['job_id']}",
        "stream": f"/stream/{accepted['job_id']}",
    }

    doc = wait_for(
        lambda: (d := show(job_id))["status"] == "completed" and d, "the job to complete"
    )
    assert doc["outputs"] == {"tag": "hello"}
    assert [(s["name"], s["status"]) for s in doc["steps"]] == [("wait", "completed")]
    assert doc["steps"][0]["duration_ms"] >= 250  # asyncio timers may fire a little early

    human = cli("jobs", "show", job_id).stdout
    assert human.startswith(f"job {job_id}  completed  (async, {server['url']})")
    assert re.search(r"\n    wait  completed  \d+ ms\n", human)
    assert "    tag: hello" in human

    wait_for(lambda: show(accepted["job_id"])["status"] == "completed", "the second job")
    listed = json.loads(cli("jobs", "list", "--status", "completed", "--json").stdout)
    assert {j["job_id"] for j in listed["jobs"]} == {job_id, accepted["job_id"]}
    assert listed["next"] is None and all(j["status"] == "completed" for j in listed["jobs"])
    assert json.loads(cli("jobs", "list", "--status", "failed", "--json").stdout)["jobs"] == []
    one = json.loads(cli("jobs", "list", "--limit", "1", "--json").stdout)["jobs"]
    assert [j["job_id"] for j in one] == [accepted["job_id"]]  # newest first

    table = cli("jobs", "list", "--server", server["server_id"]).stdout
    short = job_id[:8]  # the table shows short ids, --json the whole ones
    assert re.search(rf"^ ?{short}\s+completed\s+async\s+\S+ \S+\s+\d+ ms\s+1/1", table, re.M)
    assert job_id not in table
    assert "No failed jobs" in cli("jobs", "list", "--status", "failed").stdout


def test_invoke_stream_piped_prints_every_event_in_order(detached: Detached) -> None:
    serve(detached, STREAMING, "streaming")
    proc = cli("invoke", "--stream", "-p", "words=4", "-p", "delay=0.02", "-p", "prompt=tok")
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    seqs = [int(line.split()[0]) for line in lines]
    assert seqs == list(range(1, len(lines) + 1))
    assert [line.split()[1] for line in lines] == [
        "job.queued",
        "job.started",
        "step.started",
        *["step.chunk"] * 4,
        "step.completed",
        "step.started",
        *["step.progress"] * 3,
        "step.completed",
        "job.completed",
    ]
    assert [line.split()[2] for line in lines[2:13]] == ["generate"] * 6 + ["summarize"] * 5
    assert [line.split()[3] for line in lines[3:7]] == ["tok-0", "tok-1", "tok-2", "tok-3"]
    assert [line.split(maxsplit=3)[3] for line in lines[9:12]] == [
        '{"done": 1, "of": 3}',
        '{"done": 2, "of": 3}',
        '{"done": 3, "of": 3}',
    ]
    kind, outputs = lines[-1].split(maxsplit=2)[1:]
    assert kind == "job.completed"
    assert json.loads(outputs) == {"summary": {"tokens": 4, "text": "tok-0 tok-1 tok-2 tok-3"}}

    job_id = lines[0].split()[2]
    assert show(job_id)["status"] == "completed"
    # --json: one document with every event, at the end
    doc = json.loads(cli("invoke", "--stream", "-p", "words=2", "-p", "delay=0", "--json").stdout)
    assert doc["json_version"] == 1 and doc["status"] == "completed"
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(doc["events"]) + 1))
    assert doc["events"][-1]["event"] == "job.completed"
    assert doc["events"][-1]["outputs"]["summary"]["tokens"] == 2


def test_stream_of_a_failing_job_exits_1_naming_the_step(detached: Detached) -> None:
    serve(detached, FAILING, "failing")
    job_id = submit("-p", "value=2")
    proc = cli("stream", job_id, check=False)
    assert proc.returncode == 1
    message = "Step 'explode' raised ValueError: cannot process value 2"
    assert proc.stderr.strip() == f"Error: job {job_id} failed: {message}"
    assert "step.failed explode" in proc.stdout
    assert proc.stdout.splitlines()[-1].split(maxsplit=2)[1] == "job.failed"
    as_json = cli("stream", job_id, "--json", check=False)
    assert as_json.returncode == 1
    doc = json.loads(as_json.stdout)
    assert doc["status"] == "failed"
    assert doc["events"][-1]["error"] == {"reason": "step_failed", "step": "explode",
                                          "message": message}  # fmt: skip
    streamed = cli("invoke", "--stream", "-p", "value=3", check=False)
    assert streamed.returncode == 1 and "Step 'explode' raised" in streamed.stderr
    error = show(job_id)["error"]
    assert error["step"] == "explode" and error["reason"] == "step_failed"


def test_jobs_cancel_ends_a_running_job_and_its_stream_exits_5(
    detached: Detached, running: Callable[..., Running]
) -> None:
    serve(detached, SLOW, "slow")
    job_id = submit("-p", "delay=60")
    follower = running("stream", job_id)
    follower.wait_line(r"^\d+ step\.started wait$")
    out = cli("jobs", "cancel", job_id).stdout
    assert out.strip() == f"Cancelled job {job_id}"
    code, stderr = follower.finish()
    assert code == 5, stderr
    assert stderr.strip() == f"Error: job {job_id} was cancelled"
    assert follower.lines[-1].split()[1] == "job.cancelled"
    doc = show(job_id)
    assert doc["status"] == "cancelled"
    assert doc["steps"] == [{"name": "wait", "status": "cancelled", "duration_ms": None}]


def test_cancel_of_a_finished_or_unknown_job_is_exit_2(detached: Detached) -> None:
    serve(detached, SLOW, "slow")
    job_id = submit("-p", "delay=0")
    wait_for(lambda: show(job_id)["status"] == "completed", "the job to complete")
    finished = cli("jobs", "cancel", job_id, check=False)
    assert finished.returncode == 2
    expected = f"Error: Job {job_id} already completed: nothing to cancel"
    assert finished.stderr.strip() == expected
    as_json = cli("jobs", "cancel", job_id, "--json", check=False)
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["status"] == 409

    never = "0" * 8 + job_id[8:]  # well formed, but no job has it
    for command in (["jobs", "show"], ["jobs", "cancel"], ["stream"]):
        malformed = cli(*command, "no-such-job", check=False)
        assert malformed.returncode == 2, command
        assert malformed.stderr.splitlines() == [
            "Error: 'no-such-job' is not a job id: job ids are UUIDs such as "
            "0b7c2f9e-5d1a-4c3e-9f8b-2a6d4e1c7b90 (or a unique prefix of one, 4+ characters); "
            "`zserve jobs list` shows them"
        ]
        unknown = cli(*command, never, check=False)
        assert unknown.returncode == 2, command
        assert unknown.stderr.splitlines() == [
            f"Error: No job '{never}' on this server: it never existed, or it finished more "
            "than 1h ago and was forgotten (ZSERVE_JOB_TTL_S)"
        ]
    problem = cli("jobs", "show", never, "--json", check=False)
    assert problem.returncode == 2 and json.loads(problem.stdout)["status"] == 404
    unreachable = cli("jobs", "list", "--url", "http://127.0.0.1:9", check=False)
    assert unreachable.returncode == 3


def test_ctrl_c_in_invoke_stream_cancels_the_job(
    detached: Detached, running: Callable[..., Running]
) -> None:
    serve(detached, STREAMING, "streaming")
    proc = running("invoke", "--stream", "-p", "words=200", "-p", "delay=0.1")
    job_id = proc.wait_line(r"^1 job\.queued ").split()[2]
    proc.wait_line(r"^\d+ step\.chunk generate word-0$")
    proc.proc.send_signal(signal.SIGINT)
    code, stderr = proc.finish()
    assert code == 130, stderr
    assert f"Interrupted: job {job_id} is cancelled" in stderr
    assert wait_for(lambda: show(job_id)["status"] == "cancelled", "the job to be cancelled")


def test_ctrl_c_in_stream_only_detaches(
    detached: Detached, running: Callable[..., Running]
) -> None:
    serve(detached, SLOW, "slow")
    job_id = submit("-p", "delay=60")
    follower = running("stream", job_id)
    follower.wait_line(r"^\d+ step\.started wait$")
    follower.proc.send_signal(signal.SIGINT)
    code, stderr = follower.finish()
    assert code == 130, stderr
    assert f"Detached from job {job_id}" in stderr
    assert show(job_id)["status"] == "running"
    cli("jobs", "cancel", job_id)


def test_with_several_servers_a_job_id_is_looked_up_on_each(
    detached: Detached,
) -> None:
    slow = serve(detached, SLOW, "slow")
    streaming = serve(detached, STREAMING, "streaming")
    job_id = submit("--deployment", "streaming", "-p", "words=2", "-p", "delay=0")
    doc = wait_for(lambda: (d := show(job_id))["status"] == "completed" and d, "the job")
    assert doc["outputs"]["summary"]["tokens"] == 2
    assert f"(async, {streaming['url']})" in cli("jobs", "show", job_id).stdout
    streamed = cli("stream", job_id)
    assert streamed.stdout.splitlines()[-1].split()[1] == "job.completed"
    never = "0" * 8 + job_id[8:]
    gone = cli("jobs", "show", never, check=False)
    assert gone.returncode == 2
    assert f"No running server knows job '{never}' (asked 2" in gone.stderr
    assert "it never existed, or it finished and was forgotten" in gone.stderr
    # a prefix is looked up on each server too
    assert f"(async, {streaming['url']})" in cli("jobs", "show", job_id[:8]).stdout
    assert slow["url"] in gone.stderr and streaming["url"] in gone.stderr
    # the wrong server named explicitly does not know it
    wrong = cli("jobs", "show", job_id, "--server", slow["server_id"], check=False)
    assert wrong.returncode == 2 and f"No job '{job_id}'" in wrong.stderr
    # listing needs one server
    several = cli("jobs", "list", check=False)
    assert several.returncode == 2 and "2 servers are running" in several.stderr


def test_stream_jsonl_prints_each_event_as_it_arrives(
    detached: Detached, running: Callable[..., Running]
) -> None:
    serve(detached, SLOW, "slow")
    job_id = submit("-p", "delay=60")
    follower = running("stream", job_id[:8], "--jsonl")
    # the job is still running: this line came out before the job's end
    started = json.loads(follower.wait_line(r'"event": "step.started"'))
    assert started["job_id"] == job_id and started["step"] == "wait"
    assert show(job_id)["status"] == "running"
    cli("jobs", "cancel", job_id)
    code, stderr = follower.finish()
    assert code == 5 and stderr.splitlines() == [f"Error: job {job_id} was cancelled"]
    events = [json.loads(line) for line in follower.lines]  # every line is one JSON document
    assert [e["event"] for e in events][:3] == ["job.queued", "job.started", "step.started"]
    assert events[-1]["event"] == "job.cancelled"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_invoke_stream_jsonl_is_one_json_line_per_event(detached: Detached) -> None:
    serve(detached, STREAMING, "streaming")
    proc = cli("invoke", "--stream", "--jsonl", "-p", "words=3", "-p", "delay=0", "-p",
               "prompt=tok")  # fmt: skip
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "job.queued" and kinds[-1] == "job.completed"
    assert [e["chunk"] for e in events if e["event"] == "step.chunk"][:3] == [
        "tok-0", "tok-1", "tok-2"
    ]  # fmt: skip
    assert events[-1]["outputs"]["summary"]["tokens"] == 3


def test_a_job_is_named_by_a_unique_prefix_of_its_id(detached: Detached) -> None:
    serve(detached, SLOW, "slow")
    job_id = submit("-p", "delay=60")
    prefix = job_id[:6].upper()  # ids are lower case: any case is taken
    assert show(prefix)["job_id"] == job_id
    assert cli("jobs", "show", job_id[:4]).stdout.startswith(f"job {job_id}  ")
    assert cli("jobs", "cancel", prefix).stdout == f"Cancelled job {job_id}\n"
    streamed = cli("stream", job_id[:8], check=False)
    assert streamed.returncode == 5
    assert streamed.stdout.splitlines()[-1].split()[1] == "job.cancelled"

    short = cli("jobs", "show", job_id[:3], check=False)
    assert short.returncode == 2
    assert short.stderr.splitlines() == [
        f"Error: Job id prefix '{job_id[:3]}' is too short: give at least 4 characters"
    ]
    other = next(c for c in "0123456789abcdef" if c != job_id[0]) + job_id[1:8]
    none = cli("jobs", "show", other, check=False)
    assert none.returncode == 2
    assert none.stderr.splitlines() == [
        f"Error: No job '{other}' on this server: it never existed, or it finished more than "
        "1h ago and was forgotten (ZSERVE_JOB_TTL_S)"
    ]


def test_an_ambiguous_job_prefix_is_an_error_listing_the_matches(
    detached: Detached, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ["abcd0001-0000-4000-8000-000000000001", "abcd0002-0000-4000-8000-000000000002"]
    broker = tmp_path / "broker.db"
    anyio.run(_finished_jobs, str(broker), ids)
    monkeypatch.setenv("ZSERVE_BROKER_URL", f"sqlite://{broker}")
    serve(detached, SLOW, "slow")
    listed = json.loads(cli("jobs", "list", "--json").stdout)["jobs"]
    assert [j["job_id"] for j in listed] == ids[::-1]
    for command in (["jobs", "show"], ["jobs", "cancel"], ["stream"]):
        both = cli(*command, "ABCD", check=False)
        assert both.returncode == 2, command
        assert both.stderr.splitlines() == [
            f"Error: Job id prefix 'ABCD' matches 2 jobs: {ids[1]}, {ids[0]}. "
            "Give more characters or the full id"
        ]
    assert show("abcd0001")["job_id"] == ids[0]


async def _finished_jobs(path: str, ids: list[str]) -> None:
    """Completed jobs with these ids in a SQLite broker file (a server then lists them)."""
    broker = SQLiteBroker(path)
    await broker.start()
    try:
        for n, job_id in enumerate(ids):
            now = time.time() + n
            record = JobRecord(job_id, now, status=JobStatus.COMPLETED, finished_at=now,
                               outputs={"tag": "old"})  # fmt: skip
            await broker.create(record, Event(ev.JOB_COMPLETED, job_id, now, None, {}))
    finally:
        await broker.close()


class _Dropping(httpx.BaseTransport):
    """The real transport, but the first event stream breaks off after ``after`` events (and
    with ``bad_gateway``, the first resume is answered 502, as by a balancer whose host has
    just gone)."""

    def __init__(self, after: int, *, bad_gateway: bool = False) -> None:
        self.inner = httpx.HTTPTransport()
        self.after = after
        self.bad_gateway = bad_gateway
        self.streams: list[str | None] = []  # the Last-Event-ID of each stream request

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/stream/") and self.bad_gateway and len(self.streams) == 1:
            self.streams.append(request.headers.get("last-event-id"))
            return httpx.Response(502, text="<html>502 Bad Gateway</html>")
        response = self.inner.handle_request(request)
        if not request.url.path.startswith("/stream/"):
            return response
        self.streams.append(request.headers.get("last-event-id"))
        if len(self.streams) > 1:
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_BreakAfter(response, self.after),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class _BreakAfter(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, events: int) -> None:
        self.response = response
        self.events = events

    def __iter__(self) -> Iterator[bytes]:
        seen = b""
        for chunk in self.response.stream:  # type: ignore[union-attr]
            seen += chunk
            yield chunk
            if seen.count(b"\n\n") >= self.events:
                raise httpx.RemoteProtocolError("peer closed connection (test)")

    def close(self) -> None:
        self.response.close()


@pytest.mark.anyio
async def test_client_events_resume_after_an_event_id_and_after_a_drop(
    detached: Detached,
) -> None:
    server = serve(detached, STREAMING, "streaming")
    with Client(server["url"]) as client:
        job_id = client.submit({"words": 3, "delay": 0})["job_id"]
        everything = list(client.events(job_id))
        assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
        assert everything[-1]["event"] == "job.completed"
        assert client.job(job_id)["status"] == "completed"
        assert len(client.jobs(status="completed")["jobs"]) == 1

        later = list(client.events(job_id, last_event_id=5))
        assert later == everything[5:]
        assert list(client.events(job_id, last_event_id=everything[-2]["seq"])) == everything[-1:]

    dropping = _Dropping(after=4)
    with Client(server["url"], transport=dropping) as client:
        resumed = list(client.events(job_id))
    assert resumed == everything  # each event once, in order, through the reconnect
    assert dropping.streams == [None, "4"]
    dropping = _Dropping(after=4, bad_gateway=True)
    with Client(server["url"], transport=dropping) as client:
        assert list(client.events(job_id)) == everything  # a 502 to a resume is tried again
    assert dropping.streams == [None, "4", "4"]

    async with AsyncClient(server["url"]) as aclient:
        new = (await aclient.submit({"words": 2, "delay": 0}))["job_id"]
        events = [e async for e in aclient.events(new, last_event_id=2)]
        assert (await aclient.job(new))["status"] == "completed"
    assert events[0]["seq"] == 3 and events[0]["event"] == "step.started"
    assert events[-1]["event"] == "job.completed"
