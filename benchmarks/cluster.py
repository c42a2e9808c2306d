"""Three zserve hosts on one Redis (issue 14's benchmark), beside one host on its local broker.

Run through ``scripts/bench-cluster``. Starts, in a temporary directory, a redis-server of its
own (``appendonly yes``, ``appendfsync everysec``, ``noeviction``), a SQLite store file that
every host shares (the hosts are on one machine; run-only requests never touch the store), the
streaming example deployed once, three hosts ``h1``-``h3`` (``zserve start --detach``, one
worker each, ``ZSERVE_BROKER_URL`` on that Redis, a short ``ZSERVE_JOB_TTL_S``) and one host
``single`` with the default local broker. Stops all of it at the end, on an error or Ctrl-C.

1. Sync p99, Redis broker beside the local broker: closed-loop sync ``/invoke`` on ``h1`` and
   on ``single``, in alternating rounds, while async jobs arrive at a fixed rate on ``h2`` and
   ``h3`` the whole time (the same load on the machine for both sides). Target: within 5%.
2. Async: jobs at the fixed rate over the three hosts (open loop: each one's latency runs from
   when it was due, submit to its terminal event on its stream) plus closed-loop sync load on
   ``h1``: submit-to-completion p50/p99, and the sync p99 beside it.
3. Redis memory per 1,000 retained jobs: once the earlier jobs have expired, ``INFO memory``
   ``used_memory`` before and after N jobs (each ends with its 15 events retained).
4. Keys left after the TTL: ``DBSIZE`` and a ``SCAN`` of the prefix once the TTL and a prune
   interval have passed (target: no key of any job).

The load generator is ``zserve bench``'s (``zserve.bench``); the async loads run in a process
of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cluster_services import BenchError, Hosts, RedisServer, log  # noqa: E402
from zserve.bench.load import LoadSpec, Tally, run_spec  # noqa: E402
from zserve.bench.procs import run_load  # noqa: E402

SOURCE = "zserve.examples.streaming:streaming_pipeline"
SYNC_BODY = json.dumps({"parameters": {"words": 3, "delay": 0}}).encode()
ASYNC_BODY = json.dumps({"parameters": {"words": 5, "delay": 0.01}}).encode()
#: the retained jobs of the memory figure: 15 events each, as the async load's
FILL_BODY = json.dumps({"parameters": {"words": 5, "delay": 0}}).encode()
PREFIX = "zserve:"
TARGET_RATIO = 1.05


def _run_specs(specs: list[LoadSpec], results: Any) -> None:
    """In a child process: the specs at once on one event loop; their tallies merged."""

    async def main() -> list[Tally]:
        return list(await asyncio.gather(*(run_spec(s) for s in specs)))

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    merged = Tally()
    for tally in asyncio.run(main()):
        merged.merge(tally)
    results.put(merged.to_dict())


class Background:
    """Loads run in a process of their own; ``result()`` waits for their merged tally."""

    def __init__(self, specs: list[LoadSpec]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results: Any = ctx.Queue()
        self.proc = ctx.Process(target=_run_specs, args=(specs, self.results), daemon=True)
        self.proc.start()

    def result(self, timeout: float) -> Tally:
        try:
            return Tally.from_dict(self.results.get(timeout=timeout))
        finally:
            self.stop()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(10)


def async_specs(
    urls: list[str],
    rate: float,
    duration_s: float,
    body: bytes = ASYNC_BODY,
    requests: int | None = None,
) -> list[LoadSpec]:
    """Async jobs at ``rate`` a second in all (open loop), or ``requests`` of them as fast as
    they go (closed loop), shared between ``urls``."""
    share = None if requests is None else requests // len(urls)
    return [
        LoadSpec(
            url=u,
            body=body,
            mode="async",
            concurrency=8,
            rate=None if requests else rate / len(urls),
            duration_s=None if requests else duration_s,
            requests=share,
        )
        for u in urls
    ]


def sync_load(url: str, concurrency: int, duration_s: float, warmup_s: float) -> Tally:
    spec = LoadSpec(
        url=url, body=SYNC_BODY, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
    )
    tally = run_load(spec)
    check(tally, f"sync load on {url}")
    return tally


def check(tally: Tally, what: str) -> None:
    if tally.interrupted:  # Ctrl-C, which the load generator caught
        raise KeyboardInterrupt
    if tally.refused is not None or tally.errors:
        raise BenchError(f"{what}: {tally.refused or dict(tally.errors)}")


def figures(tally: Tally) -> dict[str, float]:
    return {
        "rps": tally.ok / tally.elapsed_s if tally.elapsed_s else 0.0,
        "p50_ms": tally.latency.percentile_ms(50),
        "p99_ms": tally.latency.percentile_ms(99),
        "requests": tally.ok,
    }


def job_keys(redis: Any) -> list[str]:
    return [
        k
        for k in redis.scan_iter(match=f"{PREFIX}*", count=1000)
        if not k.startswith(f"{PREFIX}leases")
    ]


def wait_expired(redis: Any, deadline_s: float) -> float:
    """Wait until no key of any job is left: how long it took."""
    start = time.monotonic()
    while job_keys(redis):
        if time.monotonic() - start > deadline_s:
            raise BenchError(
                f"keys of jobs still there after {deadline_s:g} s: {job_keys(redis)[:5]}"
            )
        time.sleep(0.5)
    return time.monotonic() - start


def used_memory(redis: Any) -> int:
    time.sleep(0.5)  # let the lazy frees and client buffers settle
    return int(redis.info("memory")["used_memory"])


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    redis_server = RedisServer(work / "redis")
    hosts = Hosts(work, f"sqlite:///{work}/store.db")
    try:
        redis_server.start()
        hosts.deploy(SOURCE, "streamer")
        cluster_env = {"ZSERVE_BROKER_URL": redis_server.url, "ZSERVE_JOB_TTL_S": str(args.ttl)}
        h = [hosts.start(f"h{i}", "streamer", **cluster_env) for i in (1, 2, 3)]
        single = hosts.start("single", "streamer")
        log(f"hosts: h1 {h[0]}, h2 {h[1]}, h3 {h[2]} (Redis broker); single {single} (local)")
        with redis_server.client() as redis:
            return measure(args, redis, h, single)
    finally:
        hosts.stop()
        redis_server.stop()


def measure(args: argparse.Namespace, redis: Any, h: list[str], single: str) -> dict[str, Any]:
    c, d, w = args.concurrency, args.duration, args.warmup
    # 1. sync p99, both sides under the same background of async jobs on h2 and h3
    sides: dict[str, list[dict[str, float]]] = {"redis": [], "local": []}
    span = args.rounds * 2 * (d + w + 2) + 5
    background = Background(async_specs(h[1:], args.rate, span))
    for round_ in range(args.rounds):
        order = ["local", "redis"] if round_ % 2 == 0 else ["redis", "local"]
        for side in order:
            found = figures(sync_load(h[0] if side == "redis" else single, c, d, w))
            sides[side].append(found)
            log(
                f"round {round_ + 1} sync c={c} {side:5} {found['rps']:7.0f} req/s  "
                f"p50 {found['p50_ms']:6.3f} ms  p99 {found['p99_ms']:6.3f} ms"
            )
    back = background.result(timeout=span + 60)
    check(back, "the background async load")
    sync = {
        side: {m: statistics.median(r[m] for r in runs) for m in runs[0]}
        for side, runs in sides.items()
    }

    # 2. async at the fixed rate over the three hosts, sync load on h1 beside it
    async_load = Background(async_specs(h, args.rate, args.async_duration))
    mixed = figures(sync_load(h[0], c, args.async_duration, 0))
    jobs = async_load.result(timeout=args.async_duration + 60)
    check(jobs, "the async load")
    log(
        f"async {args.rate:g} jobs/s on 3 hosts: submit-to-completion "
        f"p50 {jobs.latency.percentile_ms(50):.1f} ms p99 {jobs.latency.percentile_ms(99):.1f} ms"
        f"; sync p99 on h1 beside it {mixed['p99_ms']:.3f} ms"
    )

    # 3. memory per 1,000 retained jobs, once every earlier job has expired
    log(f"waiting for the earlier jobs to expire (TTL {args.ttl:g} s) ...")
    first_wait = wait_expired(redis, args.ttl + 60)
    before = used_memory(redis)
    start = time.monotonic()
    fill = Background(async_specs(h, 0, 0, FILL_BODY, requests=args.jobs))
    filled = fill.result(timeout=args.ttl + 300)
    fill_s = time.monotonic() - start
    check(filled, "the memory fill")
    retained = int(redis.zcard(f"{PREFIX}jobs"))
    after = used_memory(redis)
    sample = redis.zrange(f"{PREFIX}jobs", 0, 0)
    one_job = (
        {
            kind: redis.memory_usage(f"{PREFIX}{kind}:{sample[0]}", samples=0) or 0
            for kind in ("job", "ev")
        }
        if sample
        else {}
    )
    if fill_s >= args.ttl:
        log(f"warning: the fill took {fill_s:.1f} s, longer than the TTL: jobs expired meanwhile")
    per_1000 = (after - before) / retained * 1000 if retained else float("nan")
    log(f"{retained} jobs retained: used_memory {before} -> {after} bytes")

    # 4. keys left once the TTL and a prune interval have passed
    time.sleep(args.ttl + min(5.0, args.ttl / 2) + 3)
    left = sorted(redis.scan_iter(match=f"{PREFIX}*", count=1000))
    return {
        "settings": {
            k: getattr(args, k)
            for k in (
                "rounds",
                "duration",
                "warmup",
                "concurrency",
                "rate",
                "async_duration",
                "jobs",
                "ttl",
            )
        },
        "sync": sync,
        "sync_p99_ratio": sync["redis"]["p99_ms"] / sync["local"]["p99_ms"],
        "background_jobs": figures(back),
        "async": figures(jobs) | {"rate": args.rate},
        "sync_beside_async": mixed,
        "memory": {
            "retained_jobs": retained,
            "used_memory_before": before,
            "used_memory_after": after,
            "bytes_per_1000_jobs": per_1000,
            "fill_s": fill_s,
            "first_expiry_wait_s": first_wait,
            "one_job_memory_usage": one_job,
        },
        "after_ttl": {
            "dbsize": int(redis.dbsize()),
            "keys": left,
            "job_keys": [k for k in left if not k.startswith(f"{PREFIX}leases")],
            "used_memory": used_memory(redis),
        },
    }


def render(r: dict[str, Any]) -> str:
    s, m, a = r["sync"], r["memory"], r["after_ttl"]
    lines = [f"{'sync /invoke':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}"]
    for side, label in (("local", "single, local broker"), ("redis", "h1 of 3, Redis broker")):
        lines.append(
            f"{label:22} {s[side]['rps']:8.0f} {s[side]['p50_ms']:8.3f} {s[side]['p99_ms']:8.3f}"
        )
    ratio = r["sync_p99_ratio"]
    lines += [
        f"sync p99, Redis / local: {ratio:.3f} (target <= {TARGET_RATIO:g}) "
        f"{'OK' if ratio <= TARGET_RATIO else 'MISSED'}",
        f"async jobs at {r['async']['rate']:g}/s on 3 hosts, submit to completion: "
        f"p50 {r['async']['p50_ms']:.1f} ms, p99 {r['async']['p99_ms']:.1f} ms "
        f"({r['async']['requests']:.0f} jobs); sync on h1 beside them: p99 "
        f"{r['sync_beside_async']['p99_ms']:.3f} ms",
        f"Redis memory per 1,000 retained jobs: {m['bytes_per_1000_jobs'] / 1024:.0f} KiB "
        f"({m['retained_jobs']} jobs of 15 events, used_memory {m['used_memory_before']} -> "
        f"{m['used_memory_after']} bytes; MEMORY USAGE of one job's hash "
        f"{m['one_job_memory_usage'].get('job')} B, of its stream "
        f"{m['one_job_memory_usage'].get('ev')} B)",
        f"after the TTL ({r['settings']['ttl']:g} s) and a prune: {len(a['job_keys'])} keys of "
        f"jobs left (target 0); DBSIZE {a['dbsize']} ({', '.join(a['keys']) or 'none'}); "
        f"used_memory {a['used_memory']} bytes",
        f"(medians of {r['settings']['rounds']} rounds of {r['settings']['duration']:g} s at "
        f"c={r['settings']['concurrency']}; async jobs on h2/h3 meanwhile at "
        f"{r['settings']['rate']:g}/s)",
    ]
    return "\n".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops everything this started, as Ctrl-C does (the finally blocks run)."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating sync rounds (3)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per sync measure (5)")
    parser.add_argument("--warmup", type=float, default=1, help="warm-up seconds per measure (1)")
    parser.add_argument("--concurrency", type=int, default=8, help="sync connections (8)")
    parser.add_argument("--rate", type=float, default=20, help="async jobs a second (20)")
    parser.add_argument(
        "--async-duration", type=float, default=10, help="seconds of the async load (10)"
    )
    parser.add_argument("--jobs", type=int, default=1200, help="jobs retained for memory (1200)")
    parser.add_argument("--ttl", type=float, default=30, help="ZSERVE_JOB_TTL_S of the hosts (30)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="zserve-bench-cluster-") as work:
            report = run(args, Path(work))
    except BenchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted: everything it started is stopped", file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
