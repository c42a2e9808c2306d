"""Start-up time: ``zserve start --detach`` against a plain FastAPI app, measured in one run.

Run through ``scripts/bench-startup``. Deploys the weather example into a temporary ZSERVE_HOME,
then for N rounds, alternating which side goes first, measures:

- ``fastapi``: ``uvicorn`` serving a one-route FastAPI app (one worker), from launch to its
  first 200 (``/health``, polled every few milliseconds);
- ``zserve``: ``zserve start --detach --port 0``, from launch to its return (``return``), and to
  the first 200 of its ``/health`` (``health``).

Prints the median of each and the difference ``zserve health - fastapi``; stops every process it
started (each runs in a session of its own, which is killed as a whole).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from _common import BenchError, log  # benchmarks/_common.py (run as a script)

ROOT = Path(__file__).resolve().parent.parent
WEATHER = "zserve.examples.weather:weather_pipeline"
#: The plain app: what ``fastapi``'s side launches (``python -c``, so no file to import).
PLAIN_APP = """
import sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
async def health() -> dict:
    return {"status": "healthy"}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), workers=1, log_level="warning")
"""
DEADLINE_S = 60.0
POLL_S = 0.005
#: What zserve's start-up may take beyond the plain app's (the issue's target).
TARGET_S = 0.3


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-startup", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        result = run(args.rounds)
    except BenchError as err:
        log(f"bench-startup: {err}")
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result)
    return 0


def run(rounds: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="zserve-bench-startup-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSERVE_", "ZENML_"))}
    env["ZSERVE_HOME"] = str(tmp / "home")
    # as on a user's machine, where imported modules keep their bytecode (__pycache__): a shell
    # with PYTHONDONTWRITEBYTECODE would compile every changed module on every start
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    samples: dict[str, list[float]] = {"fastapi": [], "zserve_return": [], "zserve_health": []}
    try:
        deployment = deploy(env)
        for rnd in range(rounds):
            sides = [plain_fastapi, zserve_start]
            for side in sides if rnd % 2 == 0 else sides[::-1]:
                for key, seconds in side(env, deployment).items():
                    samples[key].append(seconds)
            log(
                f"round {rnd + 1}/{rounds}: fastapi {samples['fastapi'][-1]:.3f} s, zserve "
                f"return {samples['zserve_return'][-1]:.3f} s, "
                f"health {samples['zserve_health'][-1]:.3f} s"
            )
    finally:
        stop_all(env)
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    difference = medians["zserve_health"] - medians["fastapi"]
    return {
        "rounds": rounds,
        "samples_s": samples,
        "median_s": medians,
        "difference_s": difference,
        "target_s": TARGET_S,
        "met": difference <= TARGET_S,
    }


def deploy(env: dict[str, str]) -> str:
    argv = [sys.executable, "-m", "zserve", "deploy", WEATHER, "--json"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    try:
        return str(json.loads(proc.stdout)["deployment"]["id"])
    except (ValueError, KeyError, TypeError):
        raise BenchError(
            f"`zserve deploy {WEATHER} --json` exited {proc.returncode} without a deployment id\n"
            f"stderr: {proc.stderr.strip()}"
        ) from None


def plain_fastapi(env: dict[str, str], deployment: str) -> dict[str, float]:
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", PLAIN_APP, str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_200(f"http://127.0.0.1:{port}/health", start, proc)
        return {"fastapi": time.perf_counter() - start}
    finally:
        kill_session(proc.pid)
        proc.wait()


def zserve_start(env: dict[str, str], deployment: str) -> dict[str, float]:
    argv = [sys.executable, "-m", "zserve", "start", "-d", deployment, "--port", "0"]
    start = time.perf_counter()
    proc = subprocess.run([*argv, "--detach", "--json"], env=env, capture_output=True, text=True)
    returned = time.perf_counter() - start
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        message = f"`zserve start --detach` exited {proc.returncode}: {proc.stderr.strip()}"
        raise BenchError(message) from None
    try:
        wait_for_200(info["url"] + "/health", start, None)
        return {"zserve_return": returned, "zserve_health": time.perf_counter() - start}
    finally:
        kill_session(int(info["pid"]))


def wait_for_200(url: str, start: float, proc: subprocess.Popen[bytes] | None) -> None:
    while time.perf_counter() - start < DEADLINE_S:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"the plain app exited {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.HTTPError, OSError):
            pass
        time.sleep(POLL_S)
    raise BenchError(f"no 200 from {url} within {DEADLINE_S:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_session(pid: int) -> None:
    """SIGTERM the session ``pid`` leads (the server and its workers), SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not session_alive(pid):
                return
            time.sleep(0.02)
        log(f"bench-startup: session {pid} ignored {sig.name}")


def session_alive(sid: int) -> bool:
    """Whether a process of session ``sid`` still runs (a zombie has stopped: it only waits for
    its parent, or init, to read its exit status)."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def stop_all(env: dict[str, str]) -> None:
    """Whatever a failed round left: `zserve stop --all` in the benchmark's home."""
    argv = [sys.executable, "-m", "zserve", "stop", "--all"]
    subprocess.run(argv, env=env, capture_output=True, timeout=60)


def print_summary(result: dict[str, Any]) -> None:
    med = result["median_s"]
    print(f"start-up, median of {result['rounds']} alternating rounds (seconds)")
    print(f"  fastapi (uvicorn, 1 worker) launch -> first 200      {med['fastapi']:.3f}")
    print(f"  zserve start --detach       launch -> return         {med['zserve_return']:.3f}")
    print(f"  zserve start --detach       launch -> /health 200    {med['zserve_health']:.3f}")
    verdict = "met" if result["met"] else "not met"
    print(
        f"  difference (zserve health - fastapi)                 {result['difference_s']:+.3f}"
        f"  (target <= {result['target_s']:.1f}: {verdict})"
    )


if __name__ == "__main__":
    sys.exit(main())
