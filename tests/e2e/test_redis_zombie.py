"""A fenced zombie (issue 14, test 7): two hosts share Redis; host 1 is frozen (SIGSTOP, as a
partition or a long pause would) while it streams a job, host 2 finds its lease run out and
fails the job ``worker_lost``; then host 1 wakes up and goes on. It cannot append to the job nor
finish it, and it stops running it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.broker.conftest import REDIS_MARKS
from tests.e2e.conftest import Detached, cli, fresh, sse_events, wait_for, wait_status
from tests.e2e.test_redis_broker import STREAMING, broker_url, submit
from zserve.jobs.upkeep import HEARTBEAT_S, LEASE_TTL_S

pytestmark = [*REDIS_MARKS, pytest.mark.slow]

__all__ = ["broker_url"]  # the fixture, used by name


def test_a_host_that_comes_back_after_its_lease_ran_out_cannot_write_to_its_job(
    broker_url: str, detached: Detached
) -> None:
    cli("deploy", STREAMING, "--name", "streamer")
    host1 = detached("--deployment", "streamer", "--host-id", "h1")
    host2 = detached("--deployment", "streamer", "--host-id", "h2")
    job_id = submit(host1["url"], {"words": 400, "delay": 0.02})
    wait_status(host2["url"], job_id, "running")
    time.sleep(0.3)  # a few chunks
    [pid] = host1["worker_pids"] or [host1["pid"]]
    os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        doc = wait_status(host2["url"], job_id, "failed", deadline_s=30)
        taken_after = time.monotonic() - frozen_at
        assert doc["error"]["reason"] == "worker_lost"
        before = sse_events(host2["url"], job_id)
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"\njob taken from the frozen host after {taken_after:.2f}s "
          f"(lease {LEASE_TTL_S}s, heartbeat {HEARTBEAT_S}s)")  # fmt: skip

    # host 1 lives again: it would go on streaming for 8 s, but its writes are refused
    wait_for(lambda: fresh(host1["url"], "GET", "/livez").status_code == 200, "host 1 awake")
    time.sleep(LEASE_TTL_S)
    after = sse_events(host2["url"], job_id)
    assert after == before
    assert after[-1]["event"] == "job.failed" and after[-1]["error"]["reason"] == "worker_lost"
    assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
    assert fresh(host1["url"], "GET", f"/jobs/{job_id}").json()["status"] == "failed"
    # it was refused (fenced), and it stopped running the job
    log = cli("logs", host1["server_id"]).stdout
    assert f"Job {job_id} was taken from this worker" in log
    assert f"Job {job_id} stopped: The job was taken from this worker" in log
