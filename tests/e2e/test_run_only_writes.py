"""Run-only means zero database writes and zero filesystem writes on the request path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("source", "body", "status"),
    [
        ("zserve.examples.weather:weather_pipeline", {"parameters": {"city": "Paris"}}, 200),
        # parallel branches, worker threads and an async step
        ("zserve.examples.fanout:fanout_pipeline", {"parameters": {"n": 1, "delay": 0.001}}, 200),
        # a failing step is answered, and logged, without writing either
        ("zserve.examples.failing:failing_pipeline", {"parameters": {}}, 500),
    ],
)
def test_run_only_invoke_opens_no_file_for_writing_and_no_database(
    source: str, body: dict[str, object], status: int
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.e2e.audit_probe", source, json.dumps(body), str(status)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["statuses"] == [status] * 100
    assert result["during"] == [], "writes on the request path:\n" + "\n".join(result["during"])
    # the hook was live: the deliberate temporary file after the invokes was seen
    assert any("open" in event for event in result["after"])
