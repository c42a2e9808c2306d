"""Latency statistics: an HDR histogram (the ``hdrhistogram`` package) of microseconds, its
percentiles, and the bins of the histogram drawn in the terminal. Histograms travel between
client processes encoded (HdrHistogram's compressed form) and are merged exactly."""

from __future__ import annotations

import math
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["PERCENTILES", "Latency", "bins"]

#: The percentiles every report gives, with their names.
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))
#: From 1 µs to 1 hour, with 3 significant digits (a value is within 0.1% of the truth).
LOWEST_US, HIGHEST_US, DIGITS = 1, 3_600_000_000, 3


class Latency:
    """Durations in microseconds: an HDR histogram."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)

    def record(self, seconds: float) -> None:
        self.hist.record_value(min(HIGHEST_US, max(LOWEST_US, round(seconds * 1e6))))

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    def add(self, other: Latency) -> None:
        self.hist.add(other.hist)

    def encode(self) -> bytes:
        return bytes(self.hist.encode())

    @classmethod
    def decode(cls, data: bytes) -> Latency:
        found = cls()
        if data:
            found.hist.decode_and_add(data)
        return found

    def percentile_ms(self, percent: float) -> float:
        value: int = self.hist.get_value_at_percentile(percent)
        return round(value / 1000, 3)

    def summary(self) -> dict[str, float | None]:
        """min, mean, the percentiles and max, in milliseconds (None when nothing was
        recorded). Values are HDR's: the highest value within 0.1% of each recorded one."""
        if not self.count:
            return dict.fromkeys(["min", "mean", *(n for n, _ in PERCENTILES), "max"])
        found: dict[str, float | None] = {
            "min": round(self.hist.get_min_value() / 1000, 3),
            "mean": round(self.hist.get_mean_value() / 1000, 3),
        }
        for name, percent in PERCENTILES:
            found[name] = self.percentile_ms(percent)
        found["max"] = round(self.hist.get_max_value() / 1000, 3)
        return found


def bins(latency: Latency, count: int = 12) -> list[dict[str, Any]]:
    """The latency distribution as ``count`` bins of equal width on a log scale, from the
    smallest to the largest value: ``[{"from_ms", "to_ms", "count"}]`` (for the terminal's
    histogram and the HTML report)."""
    if not latency.count:
        return []
    lo = max(latency.hist.get_min_value(), LOWEST_US)
    hi = max(latency.hist.get_max_value(), lo + 1)
    edges = [lo * (hi / lo) ** (i / count) for i in range(count + 1)]
    counts = [0] * count
    for item in latency.hist.get_recorded_iterator():
        value = item.value_iterated_to
        where = 0 if value <= lo else int(count * math.log(value / lo) / math.log(hi / lo))
        counts[min(count - 1, where)] += item.count_added_in_this_iter_step
    return [{"from_ms": round(edges[i] / 1000, 3), "to_ms": round(edges[i + 1] / 1000, 3),
             "count": counts[i]} for i in range(count)]  # fmt: skip
