"""How fast the Runs and Jobs pages load with 10,000 runs in the store and 10,000 jobs in the
broker: seeded in bulk through zserve's own ``Store.add_runs`` and broker API (group commits),
then timed in Chromium from navigation to the list rendered. Figures are printed, not asserted
(run with ``-s`` to see them)::

    PYTHONPATH=. .venv/bin/python -m pytest tests/ui/test_perf.py -q -s
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerProcess
from tests.ui.conftest import Dashboard
from zserve import events as ev
from zserve.broker import open_broker
from zserve.records import JobRecord, JobStatus, RunRecord, StepRun, StepStatus, new_id, new_job_id
from zserve.settings import Settings

pytestmark = pytest.mark.slow

TRACKED = "tests.server.tracked:tracked"
COUNT = 10_000
ROUNDS = 5

# Installed before the page's own scripts: when the selector first matches, the time since
# navigation started (performance.now) goes into window.__rendered.
WATCH = """
(() => {
  const wanted = %r;
  const look = () => {
    if (window.__rendered === undefined && document.querySelector(wanted)) {
      window.__rendered = performance.now();
    }
  };
  new MutationObserver(look).observe(document, { childList: true, subtree: true });
})();
"""


def seed_runs(deployment_id: str) -> float:
    from zserve.store import Store

    settings = Settings.from_env()
    began = time.perf_counter()
    now = time.time() - COUNT
    with Store(settings.store_url, artifact_dir=settings.artifact_dir) as store:
        for start in range(0, COUNT, 1000):
            batch = []
            for i in range(start, start + 1000):
                t = now + i
                failed = i % 10 == 0
                steps = [
                    StepRun("lookup_user", StepStatus.COMPLETED, t + 0.001, 1.0),
                    StepRun("forecast", StepStatus.COMPLETED, t + 0.001, 2.0),
                    StepRun(
                        "report",
                        StepStatus.FAILED if failed else StepStatus.COMPLETED,
                        t + 0.004,
                        1.5,
                        error={"type": "ValueError", "message": "no"} if failed else None,
                    ),
                ]
                batch.append(
                    RunRecord(
                        new_id(), new_job_id(), "tracked", "metadata" if i % 2 else "full",
                        deployment_id=deployment_id,
                        status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                        started_at=t, finished_at=t + 0.006,
                        parameters={"city": f"c{i}"}, metadata={"i": i}, steps=steps,
                    )
                )  # fmt: skip
            store.add_runs(batch)
        took = time.perf_counter() - began
        seen, cursor = 0, None
        while True:
            page, cursor = store.list_runs(deployment_id=deployment_id, limit=500, cursor=cursor)
            seen += len(page)
            if cursor is None:
                break
    assert seen == COUNT
    return took


async def seed_jobs(url: str) -> float:
    broker = open_broker(url)
    await broker.start()
    began = time.perf_counter()
    now = time.time() - COUNT

    async def one(i: int) -> None:
        job = JobRecord(new_job_id(), now + i, capture="none")
        await broker.create(job, ev.Event(ev.JOB_QUEUED, job.job_id, job.created_at))
        done = ev.Event(ev.JOB_COMPLETED, job.job_id, job.created_at + 0.01, data={"outputs": {}})
        changes = {"finished_at": job.created_at + 0.01, "started_at": job.created_at,
                   "outputs": {"output": i}}  # fmt: skip
        await broker.finish(job.job_id, done, changes)

    try:
        for start in range(0, COUNT, 500):
            await asyncio.gather(*(one(i) for i in range(start, start + 500)))
    finally:
        await broker.close()
    return time.perf_counter() - began


def timed(board: Dashboard, route: str, selector: str, api: str) -> tuple[float | None, float]:
    """Navigation to ``selector`` rendered (None when it never is) and the API call's end (ms
    since navigation started), in a fresh page of the board's context."""
    page = board.page.context.new_page()
    page.add_init_script(WATCH % selector)
    page.goto(f"{board.server.url}/ui#{route}")
    rendered: float | None = None
    try:
        page.wait_for_selector(selector, timeout=3_000)
        rendered = page.evaluate("() => window.__rendered")
    except Exception:  # the page does not render that (yet): the API figure still stands
        pass
    fetched = page.evaluate(
        "(api) => Math.max(0, ...performance.getEntriesByType('resource')"
        ".filter((e) => e.name.includes(api)).map((e) => e.responseEnd))",
        api,
    )
    page.close()
    return rendered, fetched


def test_list_pages_with_10000_runs_and_10000_jobs(
    deployed: Callable[..., dict[str, Any]],
    servers: Callable[..., ServerProcess],
    ui: Callable[[ServerProcess], Dashboard],
    tmp_path: Path,
) -> None:
    deployment = deployed(TRACKED)["id"]
    broker_url = f"sqlite:///{tmp_path / 'broker.db'}"
    runs_s = seed_runs(deployment)
    with ThreadPoolExecutor(1) as pool:  # Playwright's loop runs in this thread
        jobs_s = pool.submit(asyncio.run, seed_jobs(broker_url)).result()
    print(f"\nseeded {COUNT} runs in {runs_s:.1f} s, {COUNT} jobs in {jobs_s:.1f} s")
    server = servers({
        "ZSERVE_DEPLOYMENT_ID": deployment, "ZSERVE_BROKER_URL": broker_url,
        "ZSERVE_CAPTURE_DEFAULT": "metadata", "ZSERVE_JOB_MAX_COUNT": str(2 * COUNT),
        "ZSERVE_JOB_TTL_S": "86400",
    })  # fmt: skip
    with server.client() as client:
        runs = client.get("/runs", params={"limit": 1}).json()["runs"]
        assert runs, "the seeded runs are served"
        jobs = client.get("/jobs", params={"limit": 1}).json()
        assert jobs["jobs"], "the seeded jobs are served"
    run_id = runs[0]["run_id"]
    board = ui(server)
    board.open("/")  # one first load: the static files come from the cache afterwards
    board.page.wait_for_selector("main h1")
    pages = [
        ("runs list", "/runs", ".runs-table tbody tr", "/runs?"),
        ("run page", f"/runs/{run_id}", ".run-timeline tbody tr", f"/runs/{run_id}"),
        ("jobs list", "/jobs", "main table tbody tr", "/jobs?"),
    ]
    print(f"{'page':<10} {'rendered ms: median (min-max)':<32} its API call ended at ms (median)")
    for name, route, selector, api in pages:
        figures = [timed(board, route, selector, api) for _ in range(ROUNDS)]
        drawn = [r for r, _ in figures if r is not None]
        fetched = [f for _, f in figures]
        shown = (
            f"{statistics.median(drawn):.0f} ({min(drawn):.0f}-{max(drawn):.0f})"
            if drawn else "not rendered (no table on this page)"
        )  # fmt: skip
        print(f"{name:<10} {shown:<32} {statistics.median(fetched):.0f}")
    # the API alone, from the browser (ms per call: median of ROUNDS, after one warm-up)
    calls = [
        "/runs?limit=50", "/runs?status=failed&limit=50", "/runs?capture=full&limit=50",
        "/runs?status=cancelled&limit=50", f"/runs/{run_id}", "/jobs?limit=50",
        "/jobs?status=failed&limit=50", "/jobs?status=completed&limit=50",
    ]  # fmt: skip
    print(f"{'API call':<40} ms: median (min-max)")
    for call in calls:
        took = board.page.evaluate(
            """async ([call, rounds]) => {
              await fetch(call);
              const took = [];
              for (let i = 0; i < rounds; i++) {
                const t = performance.now();
                const answer = await fetch(call);
                await answer.json();
                took.push(performance.now() - t);
              }
              return took;
            }""",
            [call, ROUNDS],
        )
        print(f"{call[:40]:<40} {statistics.median(took):.0f} ({min(took):.0f}-{max(took):.0f})")
    board.open("/runs")
    board.page.wait_for_selector(".runs-table tbody tr")
    board.shot("runs-10000")
