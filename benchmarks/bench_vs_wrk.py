"""Is ``zserve bench`` a trustworthy load generator? It and ``wrk`` measure the same server, in
alternating rounds: p50 at concurrency 1 and requests/s at concurrency 16 (both send the same
request, ``Zserve-Timing: 1`` included, so the server does the same work). Prints each round and
the median ratios bench/wrk; the issue's bar is within 15% of wrk's.

Run through ``scripts/bench-vs-wrk`` (it installs wrk if missing). Deploys the weather example
into a temporary ZSERVE_HOME, starts one server (one worker), stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEATHER = "zserve.examples.weather:weather_pipeline"
BODY = '{"parameters": {"city": "Paris"}}'
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def zserve(*args: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "zserve", *args], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), check=True)  # fmt: skip
    return proc.stdout


def wrk(url: str, connections: int, seconds: int) -> tuple[float, float]:
    """(p50 ms, requests/s) from wrk with one thread."""
    env = {**os.environ, "BENCH_BODY": BODY}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", "Zserve-Timing: 1",
         "-s", str(ROOT / "benchmarks" / "post.lua"), f"{url}/invoke"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if p50 is None or rps is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    return float(p50.group(1)) * UNIT_MS[p50.group(2)], float(rps.group(1))


def bench(
    url: str, connections: int, seconds: int, env: dict[str, str]
) -> tuple[float, float, float]:
    """(p50 ms, requests/s, client CPU %) from zserve bench."""
    args = ["--url", url, "-c", str(connections), "-d", f"{seconds}s", "--warmup", "1s"]
    doc = json.loads(zserve("bench", *args, "-p", "city=Paris", "--json", env=env))
    return doc["latency_ms"]["p50"], doc["throughput"]["rps"], doc["client"]["cpu_percent"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-vs-wrk", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ZSERVE_HOME": home}
        zserve("deploy", WEATHER, "--name", "weather", env=env)
        started = json.loads(zserve("start", "-d", "weather", "--port", "0", "--detach", "--json",
                                    env=env))  # fmt: skip
        url = started["url"]
        try:
            rows = []
            for round_ in range(1, args.rounds + 1):
                w1, _ = wrk(url, 1, args.duration)
                b1, _, cpu1 = bench(url, 1, args.duration, env)
                _, w16 = wrk(url, 16, args.duration)
                _, b16, cpu16 = bench(url, 16, args.duration, env)
                rows.append((w1, b1, w16, b16, cpu1, cpu16))
                print(f"round {round_}: c=1 p50 wrk {w1:.3f} ms, bench {b1:.3f} ms; "
                      f"c=16 wrk {w16:,.0f} req/s, bench {b16:,.0f} req/s "
                      f"(bench client CPU {cpu1:.0f}% / {cpu16:.0f}%)", flush=True)  # fmt: skip
        finally:
            zserve("stop", "--all", env=env)
    p50_ratio = statistics.median(r[1] / r[0] for r in rows)
    rps_ratio = statistics.median(r[3] / r[2] for r in rows)
    print(f"median ratios bench/wrk: p50 at c=1 {p50_ratio:.3f}, req/s at c=16 {rps_ratio:.3f} "
          f"(bar: within 0.85-1.15)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
