"""The statistics and the result document, on known data: percentiles from the HDR histogram,
the histogram's bins, merging client processes' tallies, the comparison's verdicts, the gates,
and the saved-result checks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from zserve.bench import JSON_VERSION, Tally, compare, document, gates, load_saved
from zserve.bench.load import LoadSpec
from zserve.bench.stats import Latency, bins
from zserve.errors import UsageError


def latency_of(values_ms: list[float]) -> Latency:
    found = Latency()
    for ms in values_ms:
        found.record(ms / 1000)
    return found


def test_percentiles_of_known_data_within_hdr_precision() -> None:
    summary = latency_of([float(ms) for ms in range(1, 1001)]).summary()
    expected = {"min": 1, "p50": 500, "p90": 900, "p95": 950, "p99": 990, "p99_9": 999,
                "max": 1000, "mean": 500.5}  # fmt: skip
    for name, value in expected.items():
        assert summary[name] == pytest.approx(value, rel=0.001), name


def test_an_empty_histogram_has_no_numbers() -> None:
    assert set(Latency().summary().values()) == {None}
    assert bins(Latency()) == []


def test_bins_cover_every_value_on_a_log_scale() -> None:
    lat = latency_of([0.1] * 50 + [1.0] * 30 + [10.0] * 20)
    found = bins(lat, count=10)
    assert len(found) == 10 and sum(b["count"] for b in found) == 100
    assert found[0]["count"] == 50 and found[-1]["count"] == 20
    assert found[0]["from_ms"] == pytest.approx(0.1, rel=0.01)
    assert found[-1]["to_ms"] == pytest.approx(10.0, rel=0.01)
    widths = [b["to_ms"] / b["from_ms"] for b in found]
    assert max(widths) == pytest.approx(min(widths), rel=0.01)  # equal on a log scale


def test_tallies_of_client_processes_merge_exactly() -> None:
    a, b = Tally(latency=latency_of([1.0] * 10), ok=10), Tally(latency=latency_of([3.0] * 30))
    b.ok, b.errors, b.statuses = 30, Counter({"http 500": 2}), Counter({500: 2})
    a.merge(Tally.from_dict(b.to_dict()))  # as it travels between processes
    assert a.ok == 40 and a.done == 42 and a.latency.count == 40
    assert a.latency.percentile_ms(50) == pytest.approx(3.0, rel=0.001)


def test_a_spec_splits_between_client_processes_without_losing_any() -> None:
    spec = LoadSpec(url="http://x", body=b"{}", concurrency=5, requests=101, warmup_requests=3,
                    rate=90.0)  # fmt: skip
    parts = [spec.part(i, 3) for i in range(3)]
    assert [p.concurrency for p in parts] == [2, 2, 1]
    assert sum(p.requests or 0 for p in parts) == 101
    assert sum(p.warmup_requests for p in parts) == 3
    assert sum(p.rate or 0 for p in parts) == pytest.approx(90.0)


def result(p50: float, rps: float, errors: int = 0) -> dict:
    tally = Tally(latency=latency_of([p50] * 100), ok=100, elapsed_s=100 / rps)
    tally.errors["http 500"] = errors
    return document(tally, {"client_procs": 1})


def test_compare_says_better_same_or_worse_beyond_the_noise() -> None:
    before = result(10.0, 1000)
    verdicts = {r["metric"]: r["verdict"] for r in compare(result(10.2, 1010), before)}
    assert verdicts["p50"] == "same" and verdicts["rps"] == "same"
    verdicts = {r["metric"]: r["verdict"] for r in compare(result(20.0, 500), before)}
    assert verdicts["p50"] == "worse" and verdicts["rps"] == "worse" and verdicts["max"] == "worse"
    verdicts = {r["metric"]: r["verdict"] for r in compare(result(5.0, 2000), before)}
    assert verdicts["p50"] == "better" and verdicts["rps"] == "better"
    verdicts = {r["metric"]: r["verdict"] for r in compare(result(10.0, 1000, 5), before)}
    assert verdicts["error_rate"] == "worse"


def test_gates_list_one_line_per_miss() -> None:
    doc = result(10.0, 1000, errors=10)
    limits = {"max_p50_ms": 20.0, "max_p99_ms": 20.0, "min_rps": 10.0, "max_error_rate": 0.5}
    assert gates(doc, limits) == []
    limits = {"max_p50_ms": 5.0, "max_p99_ms": 5.0, "min_rps": 10_000.0, "max_error_rate": 0.01}
    missed = gates(doc, limits)
    assert len(missed) == 4
    assert missed[0].startswith("--max-p50-ms 5: p50 was 10.")
    assert missed[2].startswith("--min-rps 10000: ")
    assert gates(doc, dict.fromkeys(limits)) == []


def test_saved_results_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(result(10.0, 1000)))
    assert load_saved(str(good))["json_version"] == JSON_VERSION
    cases = {"not json": "is not JSON", "[1, 2]": "is not a zserve bench result",
             '{"json_version": 99}': "is not a zserve bench result"}  # fmt: skip
    for text, message in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UsageError, match=message):
            load_saved(str(bad))
    with pytest.raises(UsageError, match="Cannot read"):
        load_saved(str(tmp_path / "missing.json"))
