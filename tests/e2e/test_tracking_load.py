"""Tracked mode under load, on real servers: two workers group-committing runs to one SQLite
file for 30 s, and ``sampled`` keeping its rate over 2,000 requests."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.e2e.tracking_helpers import Tracked

WEATHER = "zserve.examples.weather:weather_pipeline"
# the weather pipeline says capture "none": a request's override is the level above it
BODY = {"parameters": {"city": "Paris"}, "capture_override": {"mode": "full"}}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_workers_recording_for_30_s_lose_no_run_and_never_see_a_lock(tracked: Tracked) -> None:
    server = tracked.start(WEATHER, ZSERVE_WORKERS="2")
    answered: Counter[int] = Counter()
    run_ids: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 30

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while time.monotonic() < deadline:
                response = client.post("/invoke", json=BODY)
                with lock:
                    answered[response.status_code] += 1
                    if response.status_code == 200:
                        run_ids.append(response.json()["run_id"])

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(answered) == {200}, answered
    assert None not in run_ids and len(set(run_ids)) == len(run_ids) > 500
    stored = {row[0] for row in tracked.rows("SELECT id FROM runs")}
    assert stored == set(run_ids)  # every answered run is in the store: zero lost
    assert tracked.count("steps") == 2 * len(run_ids)
    log = server.output()
    assert "locked" not in log and "Traceback" not in log
    with httpx.Client(base_url=server.url) as client:
        metrics = client.get("/metrics?format=prometheus").text
    recorded = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('zserve_runs_recorded_total{capture="full",status="completed"}')
    ]
    assert recorded == [len(run_ids)]  # summed over both workers


@pytest.mark.slow
@pytest.mark.parametrize(("rate", "points"), [(0.1, 3), (0.5, 5)])
def test_sampled_keeps_its_rate_over_2000_requests(
    tracked: Tracked, rate: float, points: int
) -> None:
    """Within 3 points at the default rate 0.1 (4.5 standard deviations of a binomial count
    over 2,000); at 0.5 a standard deviation is 1.1 points, so 5 points is the same margin."""
    if not tracked.url.startswith("sqlite"):
        pytest.skip("the rate does not depend on the store")
    server = tracked.start(WEATHER, ZSERVE_SAMPLE_RATE=str(rate))
    body = {"parameters": {"city": "Paris"}, "capture_override": {"mode": "sampled"}}
    recorded = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(2000):
            answer = client.post("/invoke", json=body).json()
            assert answer["capture"] == "sampled"
            recorded += answer["run_id"] is not None
    assert abs(recorded / 2000 - rate) <= points / 100
    assert tracked.count("runs") == recorded
