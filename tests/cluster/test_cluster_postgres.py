"""PostgreSQL restarted while three hosts record tracked runs (issue 14, test 8): once it is
back, no run is lost. A run that ran while it was down is written once it is back (the run
writer retries it; its sync request waits); a request refused before running (503
store-unavailable) is retried by its client; an async job that starts while it is down fails
``store_unavailable`` before it runs."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.cluster.conftest import CLUSTER_MARKS, Cluster, MakeCluster, job_id_of, submit
from tests.cluster.harness import PostgresCluster, deploy, own_postgres_problem
from tests.cluster.streams import stream
from tests.e2e.conftest import fresh, wait_for

NO_OWN_POSTGRES = own_postgres_problem()
pytestmark = [
    *CLUSTER_MARKS,
    pytest.mark.skipif(NO_OWN_POSTGRES is not None, reason=str(NO_OWN_POSTGRES)),
]

METADATA = {"mode": "metadata"}
REQUEST_TIMEOUT = httpx.Timeout(30, connect=5)


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this test's own: it restarts it."""
    pg = PostgresCluster()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.destroy()


class Recorder(threading.Thread):
    """Tracked sync invokes on one host until stopped; a 503 is retried (after its
    Retry-After) until the request gets its 200."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.run_ids: list[str] = []
        self.refused = 0
        self.other: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        body = {"parameters": {"words": 2, "delay": 0.01}, "capture_override": METADATA}
        with httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT) as client:
            while not self.stopping.is_set():
                try:
                    answer = client.post("/invoke", json=body)
                except httpx.HTTPError as exc:
                    self.other.append(type(exc).__name__)
                    continue
                if answer.status_code == 200:
                    self.run_ids.append(answer.json()["run_id"])
                elif answer.status_code == 503:
                    self.refused += 1
                    time.sleep(min(float(answer.headers.get("Retry-After", "0.2")), 0.2))
                else:
                    self.other.append(f"{answer.status_code} {answer.text[:200]}")


def dropped(url: str) -> float:
    metrics = fresh(url, "GET", "/metrics?format=prometheus").text
    return sum(float(v) for v in re.findall(r"^zserve_runs_dropped_total\{.*\} (\S+)$",
                                            metrics, re.MULTILINE))  # fmt: skip


def stored_runs(url: str) -> dict[str, str | None]:
    """run id -> job id, of every run in the store."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(text("SELECT id, job_id FROM runs"))}
    finally:
        engine.dispose()


def test_postgresql_restarted_during_tracked_runs_loses_no_run(
    own_postgres: PostgresCluster, make_cluster: MakeCluster, tmp_path: Any
) -> None:
    store = own_postgres.url
    cluster: Cluster = make_cluster(store_url=store, deployment=deploy(tmp_path / "dep", store))
    urls = [h.url for h in cluster.hosts]
    recorders = [Recorder(url) for url in urls]
    for r in recorders:
        r.start()
    jobs: list[str] = []
    refused_jobs = 0

    def submit_jobs(seconds: float) -> None:
        nonlocal refused_jobs
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            answer = submit(urls[len(jobs) % 3], {"words": 10, "delay": 0.05},
                            capture_override=METADATA)  # fmt: skip
            if answer.status_code == 202:
                jobs.append(job_id_of(answer))
            else:
                refused_jobs += 1
            time.sleep(0.1)

    submit_jobs(1.5)  # tracked runs going on, sync and async
    down = time.monotonic()
    own_postgres.stop()  # a fast shutdown: every session cut
    submit_jobs(2.0)
    own_postgres.start()
    up = time.monotonic()
    submit_jobs(3.0)  # and once it is back
    for r in recorders:
        r.stopping.set()
        r.join(60)
        assert not r.is_alive()

    def ended() -> list[dict[str, Any]] | None:
        docs = [fresh(urls[0], "GET", f"/jobs/{j}").json() for j in jobs]
        return None if any(d["status"] in ("queued", "running") for d in docs) else docs

    docs = wait_for(ended, "every job to end", deadline_s=60, every=0.2)
    runs = stored_runs(store)
    sync_ids = [i for r in recorders for i in r.run_ids]
    missing_sync = [i for i in sync_ids if i not in runs]
    completed = [d for d in docs if d["status"] == "completed"]
    missing_async = [d["job_id"] for d in completed if d["run_id"] not in runs]
    failed = [d for d in docs if d["status"] != "completed"]
    drops = sum(dropped(url) for url in urls)
    print(
        f"\nPostgreSQL stopped (fast) for {up - down:.1f} s and started again during tracked "
        f"runs on 3 hosts: sync {len(sync_ids)} runs answered 200 "
        f"({sum(r.refused for r in recorders)} 503s retried), {len(missing_sync)} of them not "
        f"stored; async {len(jobs)} jobs ({refused_jobs} submits refused), {len(completed)} "
        f"completed, {len(missing_async)} of those without a stored run, {len(failed)} failed "
        f"{sorted({(d['status'], (d.get('error') or {}).get('reason')) for d in failed})}; "
        f"runs dropped (zserve_runs_dropped_total) {drops:g}; {len(runs)} runs stored"
    )
    assert not [o for r in recorders for o in r.other]
    assert not missing_sync and not missing_async
    # a job that failed for want of the store was refused before it ran: nothing to retry
    # but its submit
    for doc in failed:
        assert doc["error"]["reason"] == "store_unavailable", doc
        ran = [e for e in stream(urls[2], doc["job_id"]).events if e["event"] == "step.started"]
        assert not ran, f"job {doc['job_id']} ran, then failed for want of the store"
    # and no run that ran was dropped
    assert drops == 0
