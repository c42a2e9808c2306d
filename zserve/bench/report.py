"""A bench result as one JSON document (``json_version`` 1), compared with a saved one, and
checked against the gates a CI script sets.

The document: ``config`` (what ran against what: never a number without it), ``requests``,
``errors``, ``throughput``, ``latency_ms``, ``first_event_ms`` (async), ``server_ms`` (the
server's own time, from ``Server-Timing``), ``histogram``, ``client`` (its CPU use) and
``interrupted``. A sweep is ``{"json_version": 1, "runs": [document, ...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zserve.bench.load import Tally
from zserve.bench.stats import bins
from zserve.errors import UsageError

__all__ = ["JSON_VERSION", "NOISE", "compare", "document", "gates", "load_saved"]

JSON_VERSION = 1
#: The change below which a metric is "same within noise" (relative); beyond it, better or
#: worse. Tails are noisier than medians on a shared machine.
NOISE = {"rps": 0.05, "p50": 0.05, "p90": 0.10, "p95": 0.10, "p99": 0.20, "p99_9": 0.30,
         "max": 0.50, "error_rate": 0.0}  # fmt: skip
#: A client process busier than this share of one core may be what limits the load.
SATURATED = 0.85


def document(tally: Tally, config: dict[str, Any]) -> dict[str, Any]:
    done = tally.done
    elapsed = tally.elapsed_s or 1e-9
    procs = int(config.get("client_procs", 1))
    cpu_share = tally.cpu_s / elapsed / procs
    rate = config.get("rate")
    achieved = round(done / elapsed, 1)
    engine = tally.engine.summary() if tally.engine.count else None
    steps = {name: round(ms / tally.engine.count, 3) for name, ms in tally.step_ms.items()}
    return {
        "json_version": JSON_VERSION,
        "config": config,
        "requests": {"done": done, "ok": tally.ok, "errors": done - tally.ok,
                     "error_rate": round((done - tally.ok) / done, 6) if done else 0.0},
        "errors": {"by_status": {str(k): v for k, v in sorted(tally.statuses.items())},
                   "by_kind": dict(sorted(tally.errors.items()))},
        "throughput": {"rps": round(tally.ok / elapsed, 1), "elapsed_s": round(elapsed, 3),
                       "target_rate": rate, "achieved_rate": achieved,
                       "sustained": None if rate is None else achieved >= 0.95 * rate},
        "latency_ms": tally.latency.summary(),
        "first_event_ms": tally.first_event.summary() if tally.first_event.count else None,
        "server_ms": None if engine is None else {"engine": engine, "steps_mean": steps},
        "histogram": bins(tally.latency),
        "client": {"procs": procs, "cpu_percent": round(cpu_share * 100, 1),
                   "saturated": cpu_share >= SATURATED},
        "interrupted": tally.interrupted,
    }  # fmt: skip


def load_saved(path: str) -> dict[str, Any]:
    """A result saved by ``--save`` (or printed by ``--json``), for ``--compare``."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"Cannot read --compare file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"--compare file {path} is not JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("runs"), list) and len(doc["runs"]) == 1:
        doc = doc["runs"][0]
    ok = isinstance(doc, dict) and doc.get("json_version") == JSON_VERSION
    if not ok or not isinstance(doc.get("latency_ms"), dict) or "throughput" not in doc:
        raise UsageError(
            f"--compare file {path} is not a zserve bench result (json_version "
            f"{JSON_VERSION}, one run): save one with `zserve bench --save FILE`"
        )
    found: dict[str, Any] = doc
    return found


def _metrics(doc: dict[str, Any]) -> dict[str, float | None]:
    found: dict[str, float | None] = {"rps": doc["throughput"].get("rps")}
    for name in ("p50", "p90", "p95", "p99", "p99_9", "max"):
        found[name] = doc["latency_ms"].get(name)
    found["error_rate"] = doc["requests"].get("error_rate")
    return found


def compare(now: dict[str, Any], before: dict[str, Any]) -> list[dict[str, Any]]:
    """Each metric then and now, its change, and a verdict: better, same (within noise) or
    worse. Throughput is better higher; latency and errors lower."""
    rows = []
    old, new = _metrics(before), _metrics(now)
    for name, noise in NOISE.items():
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            rows.append({"metric": name, "before": a, "now": b, "change": None, "verdict": "n/a"})
            continue
        change = (b - a) / a if a else (0.0 if b == a else float("inf"))
        if abs(change) <= noise or a == b:
            verdict = "same"
        else:
            verdict = "better" if (change > 0) == (name == "rps") else "worse"
        rows.append({"metric": name, "before": a, "now": b,
                     "change": None if change == float("inf") else round(change, 4),
                     "verdict": verdict})  # fmt: skip
    return rows


def gates(doc: dict[str, Any], limits: dict[str, float | None]) -> list[str]:
    """One line per gate the result misses (none: it passes). ``limits``: max_p50_ms,
    max_p99_ms, min_rps, max_error_rate (None: not set)."""
    latency, rps = doc["latency_ms"], doc["throughput"]["rps"]
    error_rate = doc["requests"]["error_rate"]
    missed = []
    for name in ("p50", "p99"):
        limit, value = limits.get(f"max_{name}_ms"), latency[name]
        if limit is not None and (value is None or value > limit):
            missed.append(f"--max-{name}-ms {limit:g}: {name} was {value} ms")
    limit = limits.get("min_rps")
    if limit is not None and rps < limit:
        missed.append(f"--min-rps {limit:g}: {rps} requests/s")
    limit = limits.get("max_error_rate")
    if limit is not None and error_rate > limit:
        missed.append(f"--max-error-rate {limit:g}: the error rate was {error_rate}")
    return missed
