"""Dynamic batching in real servers (``zserve start``, one worker and two): concurrent requests
get their own answers from shared calls of at most ``max_size``, one failing item fails one
request, tracked mode records each run's own values, and /metrics (checked by ``promtool`` when
it is installed) has the batch histograms, summed over the workers."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import Detached, cli

pytestmark = pytest.mark.slow

SCALING = "tests.server.batched:scaling"


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_requests_share_batches_in_a_real_server(
    detached: Detached, workers: int
) -> None:
    cli("deploy", SCALING, "--name", "scaling")
    server = detached("--deployment", "scaling", "--workers", str(workers))
    values = list(range(1, 33))

    def invoke(x: int) -> httpx.Response:
        body = {"parameters": {"x": x}, "capture_override": {"mode": "full"}}
        return httpx.post(f"{server['url']}/invoke", json=body, timeout=60)

    with ThreadPoolExecutor(32) as pool:
        answers = dict(zip(values, pool.map(invoke, values), strict=True))
    failed = answers.pop(13)
    assert failed.status_code == 500
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["detail"] == "Step 'scale' raised ValueError: cannot scale 13"
    with httpx.Client(base_url=server["url"], timeout=30) as client:
        for x, answer in answers.items():
            assert answer.status_code == 200, answer.text
            doc = answer.json()
            output = doc["outputs"]["output"]
            assert output["y"] == 2 * x and 1 <= output["batch"] <= 8
            run = client.get(f"/runs/{doc['run_id']}").json()
            steps = {s["name"]: s for s in run["steps"]}
            assert steps["scale"]["status"] == "completed"
            assert steps["scale"]["outputs"]["output"]["value"] == {
                "y": 2 * x, "batch": output["batch"]
            }  # fmt: skip
        text = client.get("/metrics", headers={"accept": "text/plain"}).text
        summary = client.get("/metrics").json()["batching"]["scale"]
        status = client.get("/status").json()
    assert status["batching"] == {"scale": {"max_size": 8, "max_wait_ms": 5.0}}
    assert re.search(r'^zserve_batch_size_sum\{step="scale"\} 32\.0$', text, re.M), text
    assert re.search(r'^zserve_batch_size_bucket\{le="8\.0",step="scale"\} (\d+)', text, re.M)
    assert 'zserve_batch_size_bucket{le="16.0",step="scale"}' in text
    assert "zserve_batch_wait_seconds_bucket" in text
    assert summary["calls"] == 32 and 1 <= summary["batches"] <= 32
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
