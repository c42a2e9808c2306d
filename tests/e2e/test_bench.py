"""``zserve bench`` against real servers: counts add up, errors by status, gates exit 4 or 0,
``--compare`` flags a real regression, sweeps with servers bench starts, async jobs, several
client processes, the HTML report, and every kind of bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import cli, forget_snapshot

pytestmark = pytest.mark.slow

WEATHER = "zserve.examples.weather:weather_pipeline"
SLOW = "zserve.examples.slow:slow_pipeline"
FAILING = "zserve.examples.failing:failing_pipeline"
#: Every key of a run's document, and of its parts: the JSON schema `--json` promises.
SCHEMA = {
    "": {"json_version", "config", "requests", "errors", "throughput", "latency_ms",
         "first_event_ms", "server_ms", "histogram", "client", "interrupted"},
    "config": {"url", "requests", "duration_s", "warmup_requests", "warmup_s", "rate",
               "timeout_s", "mode", "concurrency", "client_procs", "capture", "parameters",
               "server", "zserve_version", "cpu_count", "started_at"},
    "config.server": {"workers", "capture_default", "version", "pipeline", "deployment_id",
                      "deployment", "started_by_bench", "startup_s"},
    "requests": {"done", "ok", "errors", "error_rate"},
    "errors": {"by_status", "by_kind"},
    "throughput": {"rps", "elapsed_s", "target_rate", "achieved_rate", "sustained"},
    "latency_ms": {"min", "mean", "p50", "p90", "p95", "p99", "p99_9", "max"},
    "client": {"procs", "cpu_percent", "saturated"},
}  # fmt: skip


def bench(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return cli("bench", "--url", url, *args, check=check, timeout=120)


def test_counts_add_up_and_the_document_keeps_its_schema(serve: Any) -> None:
    server = serve(WEATHER)
    proc = bench(server.url, "-n", "300", "-c", "4", "--warmup", "20", "-p", "city=Paris",
                 "--json")  # fmt: skip
    doc = json.loads(proc.stdout)
    for path, keys in SCHEMA.items():
        part = doc
        for key in filter(None, path.split(".")):
            part = part[key]
        assert set(part) == keys, path
    assert doc["requests"] == {"done": 300, "ok": 300, "errors": 0, "error_rate": 0.0}
    assert sum(b["count"] for b in doc["histogram"]) == 300
    assert doc["config"]["server"]["workers"] == 1 and doc["config"]["concurrency"] == 4
    assert doc["config"]["parameters"] == {"city": "Paris"}
    steps = doc["server_ms"]["steps_mean"]
    assert set(steps) == {"fetch_data", "analyze_data"}
    lat, server_p50 = doc["latency_ms"], doc["server_ms"]["engine"]["p50"]
    assert lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"] and server_p50 <= lat["p50"]
    served = httpx.get(f"{server.url}/metrics").json()["invocations"]["by_status"]["completed"]
    assert served == 300 + 20 + 1  # the measured, the warm-up and the one probe
    assert proc.stderr == ""  # piped: nothing but the result


def test_errors_are_counted_by_status_and_the_error_gate_exits_4(serve: Any) -> None:
    server = serve(FAILING)
    doc = json.loads(bench(server.url, "-n", "50", "--json").stdout)
    assert doc["requests"]["errors"] == 50 and doc["errors"]["by_status"] == {"500": 50}
    assert doc["errors"]["by_kind"] == {"http 500": 50}
    gated = bench(server.url, "-n", "20", "--max-error-rate", "0.1", check=False)
    assert gated.returncode == 4
    assert gated.stderr.splitlines() == [
        "Error: gate missed: --max-error-rate 0.1: the error rate was 1.0"
    ]


def test_each_gate_exits_4_on_a_miss_and_0_on_a_pass(serve: Any) -> None:
    server = serve(WEATHER)
    common = ("-n", "200", "-c", "2", "-p", "city=Oslo")
    passed = bench(server.url, *common, "--max-p50-ms", "5000", "--max-p99-ms", "5000",
                   "--min-rps", "1", "--max-error-rate", "0", check=False)  # fmt: skip
    assert passed.returncode == 0, passed.stderr
    for gate, value in (("--max-p50-ms", "0.001"), ("--max-p99-ms", "0.001"),
                        ("--min-rps", "1e9")):  # fmt: skip
        missed = bench(server.url, *common, gate, value, check=False)
        assert missed.returncode == 4, gate
        [line] = missed.stderr.splitlines()
        assert line.startswith(f"Error: gate missed: {gate} "), line
    both = bench(server.url, *common, "--max-p50-ms", "0.001", "--min-rps", "1e9", check=False)
    assert both.returncode == 4 and len(both.stderr.splitlines()) == 2


def test_compare_flags_a_real_regression(serve: Any, tmp_path: Path) -> None:
    server = serve(SLOW)
    saved = tmp_path / "fast.json"
    bench(server.url, "-n", "40", "-p", "delay=0.002", "--save", str(saved))
    slower = bench(server.url, "-n", "40", "-p", "delay=0.02", "--compare", str(saved), "--json")
    rows = {r["metric"]: r for r in json.loads(slower.stdout)["comparison"]}
    assert rows["p50"]["verdict"] == "worse" and rows["p50"]["change"] > 1
    assert rows["rps"]["verdict"] == "worse"
    text = bench(server.url, "-n", "40", "-p", "delay=0.02", "--compare", str(saved)).stdout
    assert "against the saved result" in text and "worse" in text


def test_async_jobs_are_followed_to_their_end(serve: Any) -> None:
    server = serve(SLOW, workers=2)
    doc = json.loads(bench(server.url, "--mode", "async", "-n", "30", "-c", "3",
                           "-p", "delay=0.01", "--json").stdout)  # fmt: skip
    assert doc["requests"]["ok"] == 30 and doc["config"]["mode"] == "async"
    first, whole = doc["first_event_ms"], doc["latency_ms"]
    assert first["p50"] <= whole["p50"] and whole["p50"] >= 10  # the step takes 10 ms


def test_several_client_processes_and_an_html_report(serve: Any, tmp_path: Path) -> None:
    server = serve(WEATHER)
    page = tmp_path / "report.html"
    doc = json.loads(bench(server.url, "-n", "400", "-c", "4", "--client-procs", "2",
                           "-p", "city=Rome", "--html", str(page), "--json").stdout)  # fmt: skip
    assert doc["requests"]["done"] == 400 and doc["client"]["procs"] == 2
    html = page.read_text()
    assert "Latency by percentile" in html and "Throughput" in html
    assert "<script src=" not in html  # self-contained: plotly.js is inline


def test_a_sweep_with_servers_bench_starts_and_stops(zhome: Path) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    proc = cli("bench", "--start", "weather", "--workers", "1,2", "-c", "1,4", "-n", "100",
               "-p", "city=Lima", "--json", timeout=240)  # fmt: skip
    runs = json.loads(proc.stdout)["runs"]
    shape = [(r["config"]["server"]["workers"], r["config"]["concurrency"]) for r in runs]
    assert shape == [(1, 1), (1, 4), (2, 1), (2, 4)]
    assert all(r["config"]["server"]["startup_s"] > 0 for r in runs)
    assert json.loads(cli("ps", "--json").stdout)["servers"] == []  # stopped after
    table = cli("bench", "--start", "weather", "-c", "1,2", "-n", "50", "-p", "city=Lima").stdout
    assert "sweep of 2 runs" in table and "up in" in table


def test_an_unsustainable_rate_is_reported_with_the_rate_achieved(serve: Any) -> None:
    server = serve(SLOW)
    proc = bench(server.url, "--rate", "200", "-d", "1s", "-c", "1", "-p", "delay=0.02")
    assert "the server could not sustain 200 req/s: it achieved" in proc.stdout
    doc = json.loads(bench(server.url, "--rate", "200", "-d", "1s", "-c", "1", "-p",
                           "delay=0.02", "--json").stdout)  # fmt: skip
    tp = doc["throughput"]
    assert tp["sustained"] is False and tp["achieved_rate"] < 60
    # latency counts from each request's due time: the queue shows, it is not hidden
    assert doc["latency_ms"]["p99"] > 200


def test_ctrl_c_prints_what_was_measured_and_exits_130(serve: Any) -> None:
    server = serve(WEATHER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zserve", "bench", "--url", server.url, "-d", "60s",
         "-p", "city=Oslo", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
    )  # fmt: skip
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["interrupted"] is True and doc["requests"]["ok"] > 0
    assert doc["throughput"]["elapsed_s"] < 30


def test_bad_input_ends_in_one_line_and_its_exit_code(
    serve: Any, zhome: Path, tmp_path: Path
) -> None:
    unreachable = cli("bench", "--url", "http://127.0.0.1:9", "-n", "5", check=False)
    assert unreachable.returncode == 3
    [line] = unreachable.stderr.splitlines()
    assert line.startswith("Error: ") and "127.0.0.1:9" in line

    server = serve(WEATHER)
    before = httpx.get(f"{server.url}/metrics").json()["invocations"]["by_status"]["invalid"]
    invalid = bench(server.url, "-n", "1000", check=False)  # city is required
    assert invalid.returncode == 2
    [line] = invalid.stderr.splitlines()
    assert line.startswith("Error: ") and "city" in line
    after = httpx.get(f"{server.url}/metrics").json()["invocations"]["by_status"]["invalid"]
    assert after - before == 1  # it stopped at the first 422

    for text, message in (("not json", "is not JSON"), ('{"a": 1}', "not a zserve bench result")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        proc = bench(server.url, "-n", "5", "-p", "city=x", "--compare", str(bad), check=False)
        assert proc.returncode == 2 and message in proc.stderr

    flow = tmp_path / "flow.py"
    flow.write_text("from zserve import pipeline\n\n@pipeline\ndef flow(x: int) -> int:\n"
                    "    return x\n")  # fmt: skip
    made = json.loads(cli("deploy", f"{flow}:flow", "--json").stdout)["deployment"]
    forget_snapshot(zhome, made["id"])  # made before snapshots: served from its source path
    flow.write_text(flow.read_text() + "\n# edited\n")
    broken = cli("bench", "--start", "flow", "-n", "5", check=False)
    assert broken.returncode == 3
    assert f"{flow} changed since deployment flow:1 was made: redeploy" in broken.stderr
