"""Execution metrics, correct across worker processes.

A server with several workers gets its own prometheus_client multiprocess directory (on tmpfs),
created by the parent (``zserve.server.boot``) before any worker starts: prometheus_client reads
``PROMETHEUS_MULTIPROC_DIR`` once, when it is first imported. Every label combination is touched
at worker start, so a request only updates memory-mapped values and opens no file. A single
worker (or an in-process test) keeps a private in-memory registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.openmetrics import exposition as openmetrics

from zserve.errors import NotAcceptable, UsageError
from zserve.records import CAPTURE_MODES, JobStatus, RunRecord

__all__ = ["BUCKETS", "CONTENT_TYPE", "FORMATS", "OPENMETRICS_TYPE", "STATUSES", "Metrics"]

# A multiprocess registry has no ``_created`` series: a single worker must not have them either.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Seconds. Fine at the low end: run-only invokes take a millisecond or less.
BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
           0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))  # fmt: skip
#: How an invocation is counted: how its job ended (a timeout apart from other failures);
#: "invalid" for a request refused for what it sent (400, 413, 415, 422), "rejected" for one
#: refused for want of room (429) before it became a job.
STATUSES = (
    JobStatus.COMPLETED.value,
    JobStatus.FAILED.value,
    "timeout",
    JobStatus.CANCELLED.value,
    "invalid",
    "rejected",
)
CAPTURES: tuple[str, ...] = CAPTURE_MODES
#: How a recorded run ended, and why a record was not stored.
RUN_STATUSES = (JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)
DROP_REASONS = ("store_unavailable", "queue_full")
#: Seconds one group commit of recorded runs takes.
WRITE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0, float("inf"))  # fmt: skip
#: Calls in one batch of a batched step; seconds its oldest call waited for the batch to start.
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, float("inf"))
BATCH_WAITS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
               0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))  # fmt: skip
CONTENT_TYPE = CONTENT_TYPE_LATEST
OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST
#: ``?format=`` values and the media types they stand for.
FORMATS = {"json": "application/json", "prometheus": CONTENT_TYPE, "openmetrics": OPENMETRICS_TYPE}


class Metrics:
    def __init__(self, batched: Sequence[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # prometheus_client chose multiprocess values when it was imported (boot.py decides)
        self.multiprocess = values.ValueClass is not values.MutexValue
        self.invocations = Counter(
            "zserve_invocations",
            "Pipeline invocations by outcome and capture mode.",
            ["status", "capture"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "zserve_invoke_duration_seconds",
            "Wall time of pipeline executions.",
            ["capture"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        # Touch every child now: nothing is created (or opened) on the request path.
        self._count = {
            (s, c): self.invocations.labels(status=s, capture=c).inc
            for s in STATUSES
            for c in CAPTURES
        }
        self._observe = {c: self.duration.labels(capture=c).observe for c in CAPTURES}
        self.runs = Counter(
            "zserve_runs_recorded",
            "Recorded runs committed to the store, by capture mode and how the run ended.",
            ["capture", "status"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "zserve_runs_dropped",
            "Runs that were to be recorded but were not, by capture mode and reason.",
            ["capture", "reason"],
            registry=self.registry,
        )
        self.store_write = Histogram(
            "zserve_store_write_seconds",
            "Wall time of one store transaction writing recorded runs (a group commit).",
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        self._recorded = {
            (c, s): self.runs.labels(capture=c, status=s).inc
            for c in CAPTURES
            for s in RUN_STATUSES
        }
        self._dropped = {
            (c, r): self.dropped.labels(capture=c, reason=r).inc
            for c in CAPTURES
            for r in DROP_REASONS
        }

        #: per batched step (its node's name): its observers of batch sizes and waits; the
        #: histograms exist only in a server with batched steps
        self._batch: dict[str, tuple[Callable[[float], None], Callable[[float], None]]] = {}
        if batched:
            sizes = Histogram(
                "zserve_batch_size",
                "Calls gathered into one call of a batched step, by step.",
                ["step"],
                buckets=BATCH_SIZES,
                registry=self.registry,
            )
            waits = Histogram(
                "zserve_batch_wait_seconds",
                "How long the oldest call of a batch waited for the batch to start, by step.",
                ["step"],
                buckets=BATCH_WAITS,
                registry=self.registry,
            )
            for step in batched:
                self._batch[step] = (sizes.labels(step=step).observe,
                                     waits.labels(step=step).observe)  # fmt: skip

    def batch(self, step: str, size: int, wait_s: float) -> None:
        """A batch of ``size`` calls of ``step`` started; its oldest call waited ``wait_s``
        (``Plan.on_batch``: on the event loop)."""
        sizes, waits = self._batch[step]
        sizes(size)
        waits(wait_s)

    def runs_committed(self, records: Sequence[RunRecord], seconds: float) -> None:
        """The writer committed ``records`` in one transaction of ``seconds``."""
        self.store_write.observe(seconds)
        for r in records:
            self._recorded[r.capture, r.status](1)

    def run_dropped(self, record: RunRecord, reason: str) -> None:
        self._dropped[record.capture, reason](1)

    def record(self, status: str, capture: str, seconds: float | None) -> None:
        self._count[status, capture](1)
        if seconds is not None:
            self._observe[capture](seconds)

    def _collect_registry(self) -> CollectorRegistry:
        if not self.multiprocess:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    def prometheus_text(self) -> bytes:
        return bytes(generate_latest(self._collect_registry()))

    def openmetrics_text(self) -> bytes:
        return bytes(openmetrics.generate_latest(self._collect_registry()))  # type: ignore[no-untyped-call]

    def summary(self) -> dict[str, Any]:
        """Counts and latency statistics, summed over every worker of this server."""
        counts: dict[str, dict[str, float]] = {}
        buckets: dict[float, float] = {}
        total_sum = 0.0
        total_count = 0.0
        for family in self._collect_registry().collect():
            for sample in family.samples:
                if sample.name == "zserve_invocations_total":
                    by_status = counts.setdefault(sample.labels["capture"], {})
                    status = sample.labels["status"]
                    by_status[status] = by_status.get(status, 0.0) + sample.value
                elif sample.name == "zserve_invoke_duration_seconds_bucket":
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
                elif sample.name == "zserve_invoke_duration_seconds_sum":
                    total_sum += sample.value
                elif sample.name == "zserve_invoke_duration_seconds_count":
                    total_count += sample.value
        totals: dict[str, int] = {}
        batching = _batching(self._collect_registry()) if self._batch else None
        for per_capture in counts.values():
            for status, value in per_capture.items():
                totals[status] = totals.get(status, 0) + int(value)
        cumulative = sorted(buckets.items())
        summary: dict[str, Any] = {
            "invocations": {
                "total": sum(totals.values()),
                "by_status": totals,
                "by_capture": {c: int(sum(v.values())) for c, v in counts.items()},
            },
            "latency_ms": {
                "count": int(total_count),
                "avg": round(1000 * total_sum / total_count, 3) if total_count else None,
                "p50": _quantile(cumulative, 0.50),
                "p95": _quantile(cumulative, 0.95),
                "p99": _quantile(cumulative, 0.99),
                # [upper bound in ms (null: +Inf), invocations at most that]: a client that
                # samples twice gets the percentiles of what happened between (the dashboard)
                "buckets": [
                    [None if le == float("inf") else round(1000 * le, 3), int(count)]
                    for le, count in cumulative
                ],
                "estimated_from": "histogram bucket upper bounds: each percentile is at most "
                "this (null when it lies beyond the largest bucket)",
            },
        }
        if batching is not None:
            summary["batching"] = batching
        return summary


def _batching(registry: CollectorRegistry) -> dict[str, Any]:
    """Per batched step: batches, calls, mean size and the wait's p50/p99 (bucket bounds)."""
    found: dict[str, dict[str, Any]] = {}
    waits: dict[str, dict[float, float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            step = sample.labels.get("step")
            if step is None or not sample.name.startswith("zserve_batch_"):
                continue
            entry = found.setdefault(step, {"batches": 0, "calls": 0})
            if sample.name == "zserve_batch_size_count":
                entry["batches"] += int(sample.value)
            elif sample.name == "zserve_batch_size_sum":
                entry["calls"] += int(sample.value)
            elif sample.name == "zserve_batch_wait_seconds_bucket":
                le = float(sample.labels["le"])
                by_le = waits.setdefault(step, {})
                by_le[le] = by_le.get(le, 0.0) + sample.value
    for step, entry in found.items():
        batches = entry["batches"]
        entry["mean_size"] = round(entry["calls"] / batches, 2) if batches else None
        cumulative = sorted(waits.get(step, {}).items())
        entry["wait_ms"] = {"p50": _quantile(cumulative, 0.50), "p99": _quantile(cumulative, 0.99)}
    return found


def _quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket that holds quantile ``q``: the most the
    buckets can say for sure (interpolating inside a bucket could claim more than was ever
    observed). None when there is nothing, or when it lies beyond the largest finite bound."""
    if not cumulative or cumulative[-1][1] == 0:
        return None
    target = q * cumulative[-1][1]
    for le, count in cumulative:
        if count >= target:
            return None if le == float("inf") else round(1000 * le, 3)
    return None


#: The media type of each format, in the server's order of preference.
_MEDIA = (("json", "application/json"), ("prometheus", "text/plain"),
          ("openmetrics", "application/openmetrics-text"))  # fmt: skip


def negotiate(fmt: str | None, accept: str | None) -> str:
    """The format of a ``/metrics`` answer: ``?format=`` if given (UsageError if unknown), else
    the ``Accept`` header's choice by q-value, where the most specific range that matches a type
    gives its q (RFC 9110); NotAcceptable when it accepts none of them. No header: JSON."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(
                f"Unknown metrics format {fmt!r}: use format={', format='.join(FORMATS)}"
            )
        return fmt
    if not accept or not accept.strip():
        return "json"
    ranges = []  # (type, subtype, q, position)
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        main, _, sub = media.lower().partition("/")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((main, sub or "*", q, position))
    best: tuple[float, int, int, int] | None = None
    chosen: str | None = None
    for rank, (name, media) in enumerate(_MEDIA):
        main, sub = media.split("/")
        found: tuple[int, float, int] | None = None  # the most specific matching range
        for r_main, r_sub, q, position in ranges:
            if (r_main, r_sub) == (main, sub):
                specificity = 2
            elif (r_main, r_sub) == (main, "*"):
                specificity = 1
            elif (r_main, r_sub) == ("*", "*"):
                specificity = 0
            else:
                continue
            if found is None or specificity > found[0]:
                found = (specificity, q, position)
        if found is None or found[1] <= 0:
            continue
        score = (found[1], found[0], -found[2], -rank)
        if best is None or score > best:
            best, chosen = score, name
    if chosen is None:
        raise NotAcceptable(
            f"/metrics cannot answer in any type of Accept: {accept.strip()[:100]!r}: accept "
            "application/json, text/plain (Prometheus) or application/openmetrics-text"
        )
    return chosen
