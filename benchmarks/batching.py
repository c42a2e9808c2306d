"""Dynamic batching over HTTP: a model-like step served batched and unbatched by one real
``zserve start`` worker each (issue 13's benchmark).

Run through ``scripts/bench-batching``. Deploys ``benchmarks/batching_model.py``'s two pipelines
into a temporary ZSERVE_HOME; for each round and each side, starts one worker with ``zserve start
--detach``, checks one answer, then measures closed loops of ``zserve bench``'s load generator
(``zserve.bench``): req/s, p50 and p99 at concurrency 32, and p50 at concurrency 1; stops the
server. Prints the median of each over the rounds, the batches' mean size (the server's
``/metrics``), and the ratios against the targets:

- throughput at c=32, batched / unbatched: at least 5x;
- the p50 a batched step adds at c=1 (batched - unbatched): at most ``batch_wait_ms`` + 0.1 ms.

The model's calls cost 2 ms + 0.05 ms per item in ``time.sleep`` behind one lock per worker
(a model that runs one call at a time): see that module for why the lock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.batching_model import MAX_SIZE, WAIT_MS  # noqa: E402
from zserve.bench.load import LoadSpec, Tally  # noqa: E402
from zserve.bench.procs import run_load  # noqa: E402

SIDES = {"unbatched": "benchmarks.batching_model:unbatched",
         "batched": "benchmarks.batching_model:batched"}  # fmt: skip
BODY = json.dumps({"parameters": {"x": 1.5}}).encode()
THROUGHPUT_TARGET = 5.0
ADDED_P50_TARGET_MS = WAIT_MS + 0.1


class BenchError(Exception):
    """The benchmark cannot give a meaningful answer; the message says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def zserve(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    proc = subprocess.run([sys.executable, "-m", "zserve", *args], env=env, cwd=str(ROOT),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        raise BenchError(f"`zserve {' '.join(args)}` exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


@contextmanager
def serving(env: dict[str, str], name: str) -> Iterator[str]:
    """One worker serving deployment ``name``: its URL; stopped afterwards."""
    doc = json.loads(zserve(env, "start", "--deployment", name, "--port", "0", "--workers", "1",
                            "--detach", "--json"))  # fmt: skip
    try:
        yield str(doc["url"])
    finally:
        zserve(env, "stop", doc["server_id"], "--timeout", "10")


def measure(url: str, concurrency: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    spec = LoadSpec(url=url, body=BODY, concurrency=concurrency, duration_s=duration_s,
                    warmup_s=warmup_s)  # fmt: skip
    tally: Tally = run_load(spec)
    if tally.refused is not None or tally.errors:
        raise BenchError(f"{url} at c={concurrency}: {tally.refused or dict(tally.errors)}")
    return {
        "rps": tally.ok / tally.elapsed_s,
        "p50_ms": tally.latency.percentile_ms(50),
        "p99_ms": tally.latency.percentile_ms(99),
        "requests": tally.ok,
    }


def batching_summary(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        doc: dict[str, Any] = json.loads(answer.read())
    found: dict[str, Any] = doc.get("batching", {})
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {f"{s}@{c}": [] for s in SIDES for c in (32, 1)}
    mean_sizes: list[float] = []
    with tempfile.TemporaryDirectory(prefix="zserve-bench-batching-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZSERVE_")}
        env["ZSERVE_HOME"] = home
        for name, source in SIDES.items():
            zserve(env, "deploy", source, "--name", name)
        for round_ in range(args.rounds):
            order = list(SIDES) if round_ % 2 == 0 else list(reversed(SIDES))
            for name in order:
                with serving(env, name) as url:
                    headers = {"Content-Type": "application/json"}
                    check = urllib.request.Request(f"{url}/invoke", BODY, headers, method="POST")
                    with urllib.request.urlopen(check, timeout=10) as answer:
                        if json.loads(answer.read())["outputs"] != {"output": 3.0}:
                            raise BenchError(f"{name}: a wrong answer")
                    for c in (32, 1):
                        found = measure(url, c, args.duration, args.warmup)
                        results[f"{name}@{c}"].append(found)
                        log(
                            f"round {round_ + 1} {name:9} c={c:<2} {found['rps']:8.0f} req/s  "
                            f"p50 {found['p50_ms']:7.3f} ms  p99 {found['p99_ms']:7.3f} ms"
                        )
                        if name == "batched" and c == 32:
                            summary = batching_summary(url).get("predict_batch", {})
                            if summary.get("mean_size") is not None:
                                mean_sizes.append(summary["mean_size"])
    median = {key: {m: statistics.median(r[m] for r in runs) for m in runs[0]}
              for key, runs in results.items()}  # fmt: skip
    return {
        "rounds": args.rounds,
        "duration_s": args.duration,
        "model": {"call_ms": 2.0, "item_ms": 0.05, "max_size": MAX_SIZE, "batch_wait_ms": WAIT_MS},
        "median": median,
        "batched_mean_size_c32": statistics.median(mean_sizes) if mean_sizes else None,
        "ratios": {
            "throughput_c32": median["batched@32"]["rps"] / median["unbatched@32"]["rps"],
            "added_p50_c1_ms": median["batched@1"]["p50_ms"] - median["unbatched@1"]["p50_ms"],
        },
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{'side':10} {'c':>3} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9}",
    ]
    for key, m in report["median"].items():
        side, c = key.split("@")
        lines.append(f"{side:10} {c:>3} {m['rps']:9.0f} {m['p50_ms']:9.3f} {m['p99_ms']:9.3f}")
    ratios = report["ratios"]
    size = report["batched_mean_size_c32"]
    lines += [
        "",
        f"throughput at c=32, batched / unbatched: {ratios['throughput_c32']:.2f}x "
        f"(target >= {THROUGHPUT_TARGET:g}x)"
        + (f"; mean batch size {size:.1f}" if size is not None else ""),
        f"p50 a batched step adds at c=1: {ratios['added_p50_c1_ms']:+.3f} ms "
        f"(target <= {ADDED_P50_TARGET_MS:g} ms)",
        f"(medians of {report['rounds']} round(s) of {report['duration_s']:g} s per measure)",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-batching",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per measure (5)")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up seconds per measure")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    try:
        report = run(args)
    except BenchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
