"""Does the dashboard slow serving? Run-only server CPU per request with the overview open and
refreshing, against without it, in alternating rounds.

Run through ``scripts/bench-dashboard``. Deploys the weather example into a temporary
ZSERVE_HOME, starts one server with ``zserve start --detach`` (capture ``none``: run-only), and
launches headless Chromium (Debian's ``chromium``, driven by Playwright) once. Then for N rounds
of each side, alternating which goes first:

- ``with``: the browser's page is on the server's ``/ui`` overview, which samples ``/metrics``
  every 2.5 s and redraws its charts;
- ``without``: the same browser's page is on ``about:blank`` (the browser still runs, so both
  sides share the machine alike).

Each round runs ``zserve bench`` against the server (closed loop) and reads the server's CPU time
(its process and every child: ``psutil`` user + system) before and after, and the invocations it
counted (``/metrics``): CPU per request is their ratio. Prints each side's median and spread
(min, max, and the spread as a share of the median) and whether the difference of the medians
is within the run-to-run noise (the larger side's max - min). Stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from _common import BenchError, log  # benchmarks/_common.py (run as a script)

ROOT = Path(__file__).resolve().parent.parent
WEATHER = "zserve.examples.weather:weather_pipeline"


#: The /metrics requests the page made since its resource timings were last cleared.
POLLS = (
    "() => performance.getEntriesByType('resource').filter(e => e.name.endsWith('/metrics')).length"
)


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-dashboard", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each side (default 5)")
    parser.add_argument("--duration", default="10s", help="each round's bench (default 10s)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="server workers (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        result = run(args)
    except BenchError as err:
        log(f"bench-dashboard: {err}")
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result)
    return 0


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise BenchError("Debian's chromium is not installed (scripts/test installs it)")
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise BenchError(
            "Playwright for Python is not installed (scripts/test installs it)"
        ) from None
    executable = chromium()
    tmp = Path(tempfile.mkdtemp(prefix="zserve-bench-dashboard-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSERVE_", "ZENML_"))}
    env["ZSERVE_HOME"] = str(tmp / "home")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    samples: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    server: dict[str, Any] | None = None
    poll_cost_ms = 0.0
    try:
        deployment = deploy(env)
        server = start(env, deployment, args.workers)
        log(f"server {server['url']} (pid {server['pid']}, {args.workers} worker(s))")
        poll_cost_ms = metrics_cost_ms(server)
        log(f"one GET /metrics costs the server {poll_cost_ms:.2f} ms CPU")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                # one round of each, not counted: the server's and the browser's warm-up
                for side in ("with", "without"):
                    one_round(env, server, page, side, args)
                for rnd in range(args.rounds):
                    sides = ["without", "with"] if rnd % 2 == 0 else ["with", "without"]
                    for side in sides:
                        figures = one_round(env, server, page, side, args)
                        samples[side].append(figures)
                        log(
                            f"round {rnd + 1}/{args.rounds} {side:>7}: "
                            f"{figures['cpu_us_per_request']:.1f} µs CPU/request, "
                            f"{figures['requests']:.0f} requests, {figures['rps']:.0f} req/s, "
                            f"{figures['metrics_polls']:.0f} /metrics polls"
                        )
            finally:
                browser.close()
    finally:
        if server is not None:
            kill_session(int(server["pid"]))
        stop_all(env)
        shutil.rmtree(tmp, ignore_errors=True)
    return summarize(samples, args, poll_cost_ms)


def metrics_cost_ms(server: dict[str, Any], calls: int = 200) -> float:
    """The server's CPU time for one GET /metrics (the mean of ``calls``, nothing else sent)."""
    tree = process_tree(int(server["pid"]))
    invocations(server["url"])
    before = cpu_seconds(tree)
    for _ in range(calls):
        invocations(server["url"])
    return 1000 * (cpu_seconds(tree) - before) / calls


def one_round(
    env: dict[str, str],
    server: dict[str, Any],
    page: Any,
    side: str,
    args: argparse.Namespace,
) -> dict[str, float]:
    if side == "with":
        page.goto(f"{server['url']}/ui#/")
        page.wait_for_selector("[data-chart=rates] .uplot canvas", timeout=30_000)
    else:
        page.goto("about:blank")
    time.sleep(0.5)
    page.evaluate("() => performance.clearResourceTimings()")
    tree = process_tree(int(server["pid"]))
    before_cpu = cpu_seconds(tree)
    before_count = invocations(server["url"])
    doc = bench(env, server["url"], args)
    after_count = invocations(server["url"])
    after_cpu = cpu_seconds(tree)
    requests = after_count - before_count
    if requests <= 0:
        raise BenchError(f"no invocation counted in a round ({side})")
    return {
        "cpu_us_per_request": 1e6 * (after_cpu - before_cpu) / requests,
        "requests": requests,
        "rps": float(doc["throughput"]["rps"]),
        "p50_ms": float(doc["latency_ms"]["p50"]),
        "errors": float(doc["requests"]["errors"]),
        # what the page asked meanwhile (the browser runs on while this thread waits for bench)
        "metrics_polls": page.evaluate(POLLS),
    }


def deploy(env: dict[str, str]) -> str:
    argv = [sys.executable, "-m", "zserve", "deploy", WEATHER, "--json"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    try:
        return str(json.loads(proc.stdout)["deployment"]["id"])
    except (ValueError, KeyError, TypeError):
        raise BenchError(
            f"`zserve deploy {WEATHER} --json` exited {proc.returncode}: {proc.stderr.strip()}"
        ) from None


def start(env: dict[str, str], deployment: str, workers: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "zserve", "start", "-d", deployment, "--port", "0",
            "--workers", str(workers), "--log-level", "warning", "--detach", "--json"]  # fmt: skip
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    try:
        found: dict[str, Any] = json.loads(proc.stdout)
        if not (found["url"] and found["pid"]):
            raise KeyError("url")
    except (ValueError, KeyError, TypeError):
        raise BenchError(
            f"`zserve start --detach` exited {proc.returncode}: {proc.stderr}"
        ) from None
    return found


def bench(env: dict[str, str], url: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, "-m", "zserve", "bench", "--url", url, "-p", "city=Paris",
            "-c", str(args.concurrency), "-d", args.duration, "--json"]  # fmt: skip
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    try:
        doc: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise BenchError(f"`zserve bench` exited {proc.returncode}: {proc.stderr}") from None
    return doc


def invocations(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        return float(json.load(answer)["invocations"]["total"])


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(tree: list[psutil.Process]) -> float:
    """User + system CPU of the server's processes (a worker that died counts nothing)."""
    total = 0.0
    for proc in tree:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def summarize(
    samples: dict[str, list[dict[str, float]]], args: argparse.Namespace, poll_cost_ms: float
) -> dict[str, Any]:
    sides: dict[str, Any] = {}
    for side, rounds in samples.items():
        cpu = [r["cpu_us_per_request"] for r in rounds]
        median = statistics.median(cpu)
        sides[side] = {
            "cpu_us_per_request": [round(v, 2) for v in cpu],
            "median": round(median, 2),
            "min": round(min(cpu), 2),
            "max": round(max(cpu), 2),
            "spread_pct": round(100 * (max(cpu) - min(cpu)) / median, 1),
            "stdev": round(statistics.stdev(cpu), 2) if len(cpu) > 1 else None,
            "rps_median": round(statistics.median(r["rps"] for r in rounds), 1),
            "p50_ms_median": round(statistics.median(r["p50_ms"] for r in rounds), 3),
            "metrics_polls": sum(r["metrics_polls"] for r in rounds),
            "errors": sum(r["errors"] for r in rounds),
        }
    difference = sides["with"]["median"] - sides["without"]["median"]
    noise = max(sides[s]["max"] - sides[s]["min"] for s in sides)
    return {
        "rounds": args.rounds,
        "duration": args.duration,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "capture": "none",
        "sides": sides,
        "difference_us": round(difference, 2),
        "difference_pct": round(100 * difference / sides["without"]["median"], 1),
        "noise_us": round(noise, 2),
        "within_noise": abs(difference) <= noise,
        # what the polls alone cost each request: polls x one poll's CPU / requests, with-rounds
        "metrics_poll_cpu_ms": round(poll_cost_ms, 3),
        "expected_us_per_request": round(
            1000
            * poll_cost_ms
            * sum(r["metrics_polls"] for r in samples["with"])
            / sum(r["requests"] for r in samples["with"]),
            4,
        ),
    }


def kill_session(pid: int) -> None:
    """SIGTERM the session ``pid`` leads (the server and its workers), SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            if all(p.status() == psutil.STATUS_ZOMBIE for p in _session(pid)):
                return
            time.sleep(0.05)


def _session(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return found


def stop_all(env: dict[str, str]) -> None:
    """Whatever a failed round left: `zserve stop --all` in the benchmark's home."""
    argv = [sys.executable, "-m", "zserve", "stop", "--all"]
    subprocess.run(argv, env=env, capture_output=True, timeout=60)


def print_summary(result: dict[str, Any]) -> None:
    print(
        f"run-only server CPU per request (µs), {result['rounds']} alternating rounds of "
        f"{result['duration']} each, -c {result['concurrency']}, {result['workers']} worker(s)"
    )
    for side, label in (("without", "without the dashboard"), ("with", "overview open")):
        s = result["sides"][side]
        print(
            f"  {label:<22} median {s['median']:7.1f}  min {s['min']:7.1f}  max {s['max']:7.1f}"
            f"  spread {s['spread_pct']:4.1f}%  ({s['rps_median']:.0f} req/s, "
            f"{s['metrics_polls']} /metrics polls)"
        )
    print(
        f"  one GET /metrics costs the server {result['metrics_poll_cpu_ms']:.2f} ms CPU: the "
        f"overview's polls add {result['expected_us_per_request']:.3f} µs per request"
    )
    verdict = "within" if result["within_noise"] else "beyond"
    print(
        f"  difference of the medians {result['difference_us']:+.1f} µs "
        f"({result['difference_pct']:+.1f}%): {verdict} the run-to-run noise "
        f"({result['noise_us']:.1f} µs, the larger max - min)"
    )


if __name__ == "__main__":
    sys.exit(main())
