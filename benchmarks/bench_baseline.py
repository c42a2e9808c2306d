"""zserve's ``POST /invoke`` against a hand-written FastAPI endpoint, run-only and (with
``--captures``) under tracked capture modes side by side.

Run through ``scripts/bench-baseline``. Deploys the pipeline into a temporary ZSERVE_HOME, then
for each round starts zserve's server, then ``benchmarks/baseline_app.py``, one at a time: checks a
200 with the right shape, warms up, measures latency at c=1 and req/s at c=16 with wrk, stops the
server. Prints the median per side and the ratios zserve/baseline. The server's CPU time per
request is read from its process tree (psutil) around the req/s run. With ``--captures
metadata,full`` each mode is one more side (``zserve-metadata``...: the same server, each
request asking for that mode, writing to the SQLite store), compared with run-only ``zserve``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from _common import BenchError, log  # benchmarks/_common.py (run as a script)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
WEATHER = "zserve.examples.weather:weather_pipeline"
#: Pipelines that do the baseline's work, so the baseline is measured beside them.
THREADED = "benchmarks.weather_threaded:weather_pipeline"
WEATHER_LIKE = {WEATHER, THREADED}
#: CPUs to pin servers and wrk to (``--table``): empty = not pinned. A server gets CPU 0 and wrk
#: CPU 1, but for the two-worker comparison: two workers on one core would take turns on it, so
#: both sides of it (one worker and two) run on both cores, shared with wrk.
PIN: dict[str, set[int]] = {}
ONE_CORE, SHARED = {"server": {0}, "load": {1}}, {"server": {0, 1}, "load": {0, 1}}
SHARED_SIDES = ("zserve_shared", "zserve_2w")
START_DEADLINE_S = 30.0
TARGETS = {"rps_ratio": (">=", 0.9), "p50_ratio": ("<=", 1.2)}
RESPONSE_KEYS = {"success", "outputs", "job_id", "run_id", "capture", "execution_time_ms"}
URL_RE = re.compile(r" at (http://127\.0\.0\.1:\d+)")
NOTABLE_RE = re.compile(r"Traceback|ERROR|WARNING|CRITICAL|Exception|Error:")
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-baseline", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per start")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--baseline-def",
        action="store_true",
        help="also measure a FastAPI plain-def endpoint (threadpool), as side baseline_def",
    )
    parser.add_argument(
        "--pipeline",
        default=WEATHER,
        help="module:attr to deploy; a pipeline other than the weather ones skips the baseline",
    )
    parser.add_argument(
        "--params", default='{"city": "Paris"}', help="JSON parameters for each invoke"
    )
    parser.add_argument(
        "--captures",
        default="",
        help="comma-separated tracked modes to measure beside run-only "
        "(metadata,full,sampled,errors_only)",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the hand-written FastAPI baseline"
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="the speed table: a raw ASGI floor, FastAPI async def and def, zserve with on-loop "
        "steps and with plain @step, each server pinned to CPU 0 and wrk to CPU 1; and zserve "
        "with one worker and with two, both on CPUs 0-1 shared with wrk",
    )
    args = parser.parse_args()
    args.captures = [m for m in args.captures.split(",") if m.strip()]
    for mode in args.captures:
        if mode not in ("metadata", "full", "sampled", "errors_only"):
            parser.error(f"--captures: unknown mode {mode!r}")
    if args.rounds < 1 or args.duration < 1 or args.warmup < 1:
        parser.error("--rounds, --duration and --warmup must be >= 1")
    try:
        args.params = json.loads(args.params)
    except ValueError as err:
        parser.error(f"--params is not JSON: {err}")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # stop the servers in `finally`s
        signal.signal(sig, signal.default_int_handler)
    try:
        report = run(args)
    except BenchError as err:
        log(f"bench-baseline: error: {err}")
        return 1
    except KeyboardInterrupt:
        log("bench-baseline: interrupted")
        return 130
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    body = json.dumps({"parameters": args.params})
    missing = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is None]
    if missing:
        log(f"bench-baseline: warning: no {', '.join(missing)}: uvicorn falls back to asyncio/h11")
    with tempfile.TemporaryDirectory(prefix="zserve-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSERVE_", "ZENML_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["ZSERVE_HOME"] = str(tmp / "home")
        deployment_id = deploy(args.pipeline, env)
        zserve_env = {
            **env,
            "ZSERVE_DEPLOYMENT_ID": deployment_id,
            "ZSERVE_PORT": "0",
            "ZSERVE_WORKERS": "1",
        }
        sides = {"zserve": ([sys.executable, "-m", "zserve.server.app"], zserve_env)}
        if args.table:
            plain_id = deploy(THREADED, env)
            sides["zserve_plain"] = ([sys.executable, "-m", "zserve.server.app"],
                                     {**zserve_env, "ZSERVE_DEPLOYMENT_ID": plain_id})  # fmt: skip
            sides["zserve_shared"] = sides["zserve"]
            sides["zserve_2w"] = ([sys.executable, "-m", "zserve.server.app"],
                                  {**zserve_env, "ZSERVE_WORKERS": "2"})  # fmt: skip
            sides["floor"] = ([sys.executable, str(BENCH / "baseline_app.py"), "--raw"], env)
            args.baseline_def = True
        # a tracked side is the same server, each request asking for its mode (capture_override
        # beats the pipeline's own setting, which is "none" for the weather pipelines)
        bodies = {"zserve": body}
        for mode in args.captures:
            sides[f"zserve-{mode}"] = ([sys.executable, "-m", "zserve.server.app"], zserve_env)
            override = {"parameters": args.params, "capture_override": {"mode": mode}}
            bodies[f"zserve-{mode}"] = json.dumps(override)
        if args.pipeline in WEATHER_LIKE and not args.no_baseline:
            sides["baseline"] = ([sys.executable, str(BENCH / "baseline_app.py")], env)
            if args.baseline_def:
                argv = [sys.executable, str(BENCH / "baseline_app.py"), "--def"]
                sides["baseline_def"] = (argv, env)
        runs, notes, reference = [], [], None
        for rnd in range(1, args.rounds + 1):
            for side, (argv, side_env) in sides.items():
                side_body = bodies.get(side, body)
                log(f"round {rnd}/{args.rounds}: {side}")
                logfile = tmp / f"{side}-{rnd}.log"
                if args.table:
                    PIN.update(SHARED if side in SHARED_SIDES else ONE_CORE)
                with serving(argv, side_env, logfile) as (url, startup_s, pid):
                    outputs = invoke_once(url, side_body)
                    reference = reference or outputs
                    if outputs != reference:
                        raise BenchError(f"{side} answered {outputs!r}, zserve {reference!r}")
                    wrk(url, 2, 16, args.warmup, side_body)
                    latency = wrk(url, 1, 1, args.duration, side_body, latency=True)
                    cpu_before = cpu_seconds(pid)
                    throughput = wrk(url, 2, 16, args.duration, side_body)
                    cpu = cpu_seconds(pid) - cpu_before
                runs.append(
                    {
                        "side": side,
                        "round": rnd,
                        "p50_ms": latency["p50_ms"],
                        "p99_ms": latency["p99_ms"],
                        "rps": throughput["rps"],
                        "cpu_us_per_req": round(1e6 * cpu / throughput["requests"], 1),
                        "startup_s": round(startup_s, 3),
                    }
                )
                lines = logfile.read_text(errors="replace").splitlines()
                notes += [f"{side} {rnd}: {line}" for line in lines if NOTABLE_RE.search(line)]
    return summarize(args, runs, list(sides), notes)


def deploy(pipeline: str, env: dict[str, str]) -> str:
    argv = [sys.executable, "-m", "zserve", "deploy", pipeline, "--json"]
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        return str(json.loads(proc.stdout)["deployment"]["id"])
    except subprocess.TimeoutExpired:
        raise BenchError(f"`zserve deploy {pipeline} --json` did not finish in 120 s") from None
    except (ValueError, KeyError, TypeError):
        raise BenchError(
            f"`zserve deploy {pipeline} --json` exited {proc.returncode} without a deployment id\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        ) from None


@contextmanager
def serving(
    argv: list[str], env: dict[str, str], logfile: Path
) -> Iterator[tuple[str, float, int]]:
    """Start a server in its own session; yield its URL once /health is 200; always stop it."""
    start = time.perf_counter()
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_pinned("server"),
        )
    try:
        url = wait_healthy(proc, logfile, start + START_DEADLINE_S)
        yield url, time.perf_counter() - start, proc.pid
    finally:
        stop(proc)


def _pinned(role: str) -> Any:
    """A preexec_fn that pins the child to the CPUs of its role (none when not pinning)."""
    cpus = PIN.get(role)
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far (threads included)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def wait_healthy(proc: subprocess.Popen[bytes], logfile: Path, deadline: float) -> str:
    while time.perf_counter() < deadline:
        text = logfile.read_text(errors="replace")
        if proc.poll() is not None:
            raise BenchError(f"{proc.args} exited {proc.returncode} before serving:\n{text}")
        match = URL_RE.search(text)
        if match and http_status(match.group(1) + "/health") == 200:
            return match.group(1)
        time.sleep(0.02)
    raise BenchError(f"{proc.args}: no 200 from /health within {START_DEADLINE_S:.0f} s:\n{text}")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # its own session: the server and any workers it forked
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            log(f"bench-baseline: {proc.args} ignored {sig.name}")


def invoke_once(url: str, body: str) -> Any:
    request = urllib.request.Request(
        url + "/invoke", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            doc = json.load(resp)
    except urllib.error.HTTPError as err:
        raise BenchError(f"POST {url}/invoke answered {err.code}: {err.read()[:1000]!r}") from None
    if not isinstance(doc, dict) or set(doc) != RESPONSE_KEYS or doc["success"] is not True:
        raise BenchError(f"POST {url}/invoke answered an unexpected document: {doc!r}")
    return doc["outputs"]


def wrk(
    url: str, threads: int, conns: int, seconds: int, body: str, latency: bool = False
) -> dict[str, float]:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "-s", str(BENCH / "post.lua")]
    argv += ["--latency", f"{url}/invoke"] if latency else [f"{url}/invoke"]
    proc = subprocess.run(
        argv, env={**os.environ, "BENCH_BODY": body}, capture_output=True, text=True, check=False,
        preexec_fn=_pinned("load"),
    )  # fmt: skip
    out = proc.stdout
    if proc.returncode != 0 or "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise BenchError(f"{' '.join(argv)} (exit {proc.returncode}):\n{out}{proc.stderr}")
    result = {
        "rps": float(_find(r"Requests/sec:\s+([\d.]+)", out, argv)),
        "requests": float(_find(r"(\d+) requests in", out, argv)),
    }
    if latency:
        for pct in (50, 99):
            value, unit = _find(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, argv, 2)
            result[f"p{pct}_ms"] = round(float(value) * UNIT_MS[unit], 4)
    return result


def _find(pattern: str, text: str, argv: list[str], groups: int = 1) -> Any:
    match = re.search(pattern, text, re.MULTILINE)
    if not match:
        raise BenchError(f"cannot read {pattern!r} in the output of {' '.join(argv)}:\n{text}")
    return match.group(1) if groups == 1 else match.groups()


def summarize(
    args: argparse.Namespace, runs: list[dict[str, Any]], sides: list[str], notes: list[str]
) -> dict[str, Any]:
    median = {
        side: {
            key: round(statistics.median(r[key] for r in runs if r["side"] == side), 3)
            for key in ("p50_ms", "p99_ms", "rps", "cpu_us_per_req", "startup_s")
        }
        for side in sides
    }
    report: dict[str, Any] = {
        "json_version": 1,
        "pipeline": args.pipeline,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "params": args.params,
        "load": {"latency": "wrk -t1 -c1 --latency", "throughput": "wrk -t2 -c16"},
        "runs": runs,
        "median": median,
        "ratios": None,
        "targets": None,
        "table": None,
        "server_log_notes": notes,
    }
    tracked = {}
    for side in sides:
        if side.startswith("zserve-"):
            t, z = median[side], median["zserve"]
            tracked[side.removeprefix("zserve-")] = {
                "rps_ratio_vs_run_only": round(t["rps"] / z["rps"], 3),
                "p50_ratio_vs_run_only": round(t["p50_ms"] / z["p50_ms"], 3),
                "cpu_us_per_req_above_run_only": round(
                    t["cpu_us_per_req"] - z["cpu_us_per_req"], 1
                ),
            }
    report["tracked"] = tracked or None
    if "floor" in median and "baseline" in median:
        floor, fastapi = median["floor"], median["baseline"]
        report["table"] = {
            side: {
                "rps": m["rps"], "rps_vs_fastapi": round(m["rps"] / fastapi["rps"], 3),
                "rps_vs_floor": round(m["rps"] / floor["rps"], 3),
                "cpu_us_per_req": m["cpu_us_per_req"],
                "cpu_vs_floor": round(m["cpu_us_per_req"] / floor["cpu_us_per_req"], 3),
                "p50_ms": m["p50_ms"], "p50_vs_fastapi": round(m["p50_ms"] / fastapi["p50_ms"], 3),
            }
            for side, m in median.items()
        }  # fmt: skip
    if all(side in median for side in SHARED_SIDES):
        one, two = (median[side]["cpu_us_per_req"] for side in SHARED_SIDES)
        report["two_workers_cpu_vs_one"] = round(two / one, 3)
    if "baseline" in median:
        z, b = median["zserve"], median["baseline"]
        report["ratios"] = {
            "rps_ratio": round(z["rps"] / b["rps"], 3),
            "p50_ratio": round(z["p50_ms"] / b["p50_ms"], 3),
            "p99_ratio": round(z["p99_ms"] / b["p99_ms"], 3),
        }
        if "baseline_def" in median:
            d = median["baseline_def"]
            report["ratios"]["rps_ratio_vs_def"] = round(z["rps"] / d["rps"], 3)
            report["ratios"]["p50_ratio_vs_def"] = round(z["p50_ms"] / d["p50_ms"], 3)
        report["targets"] = {
            name: {
                "target": f"{op} {limit}",
                "met": (report["ratios"][name] >= limit)
                if op == ">="
                else (report["ratios"][name] <= limit),
            }
            for name, (op, limit) in TARGETS.items()
        }
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{report['pipeline']}: {report['rounds']} round(s) x {report['duration_s']} s per run; "
        "latency at c=1 (wrk -t1 -c1), req/s at c=16 (wrk -t2 -c16)",
        "",
        f"{'round':<8}{'side':<22}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'cpu us':>9}"
        f"{'start s':>9}",
    ]
    rows = [(str(r["round"]), r) for r in report["runs"]]
    rows += [("median", {"side": side, **m}) for side, m in report["median"].items()]
    for label, r in rows:
        lines.append(
            f"{label:<8}{r['side']:<22}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
            f"{r['rps']:>9.0f}{r['cpu_us_per_req']:>9.1f}{r['startup_s']:>9.2f}"
        )
    if report.get("tracked"):
        lines += [
            "",
            f"{'capture':<13}{'req/s ratio':>12}{'p50 ratio':>11}{'CPU us/req above':>18}",
        ]
        for mode, t in report["tracked"].items():
            lines.append(
                f"{mode:<13}{t['rps_ratio_vs_run_only']:>12.3f}{t['p50_ratio_vs_run_only']:>11.3f}"
                f"{t['cpu_us_per_req_above_run_only']:>18.1f}"
            )
    if report.get("table"):
        lines += ["", f"{'side':<14}{'req/s':>8}{'vs FastAPI':>11}{'vs floor':>9}{'CPU us':>8}"
                  f"{'CPU vs floor':>13}{'p50 ms':>8}{'p50 vs FastAPI':>15}"]  # fmt: skip
        for side, t in report["table"].items():
            lines.append(
                f"{side:<14}{t['rps']:>8.0f}{t['rps_vs_fastapi']:>11.3f}{t['rps_vs_floor']:>9.3f}"
                f"{t['cpu_us_per_req']:>8.1f}{t['cpu_vs_floor']:>13.3f}{t['p50_ms']:>8.3f}"
                f"{t['p50_vs_fastapi']:>15.3f}"
            )
    if (two := report.get("two_workers_cpu_vs_one")) is not None:
        lines += ["", "two workers' CPU per request vs one worker's (zserve_2w / zserve_shared, "
                  f"both on CPUs 0-1 shared with wrk): {two:.3f}"]  # fmt: skip
    if report["ratios"]:
        lines.append("")
        for name, value in report["ratios"].items():
            line = f"{name:<10}{value:>7.3f}"
            if target := report["targets"].get(name):
                line += f"  (target {target['target']}: {'met' if target['met'] else 'MISSED'})"
            lines.append(line)
    elif not report.get("tracked"):
        lines += ["", "No baseline: it only exists for the weather pipeline."]
    if report["server_log_notes"]:
        lines += ["", "Notable server log lines:", *report["server_log_notes"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
