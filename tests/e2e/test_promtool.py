"""The Prometheus text of real servers, one worker and two, passes ``promtool check metrics``
(Debian's ``prometheus`` package; ``scripts/test`` installs it, and the test is skipped where it
is missing outside CI)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

pytestmark = pytest.mark.slow

WEATHER = "zserve.examples.weather:weather_pipeline"


@pytest.mark.parametrize("workers", [1, 2])
def test_promtool_accepts_the_metrics(serve: Any, workers: int) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/test installs Debian's prometheus)")
    server = serve(WEATHER, workers=workers)
    with server.client() as client:
        for i in range(6):
            client.post("/invoke", json={"parameters": {"city": f"c{i}"}})
        client.post("/invoke", json={"parameters": {}})  # invalid
        text = client.get("/metrics", headers={"accept": "text/plain"}).text
        openmetrics = client.get("/metrics?format=openmetrics").text
    assert "_created" not in text
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    print(f"\npromtool, {workers} worker(s): exit {checked.returncode} {checked.stderr.strip()}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert openmetrics.endswith("# EOF\n") and "zserve_invocations_total" in openmetrics
