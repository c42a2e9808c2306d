"""``zserve bench --html FILE``: one self-contained page (plotly.js inline, nothing loaded from
the internet) with latency-percentile and throughput charts drawn by plotly, the latency
histogram, and each run's configuration."""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["page"]

PERCENTILES = ("p50", "p90", "p95", "p99", "p99_9", "max")


def _label(doc: dict[str, Any]) -> str:
    c = doc["config"]
    return f"workers {c['server']['workers']}, capture {c['capture']}, c={c['concurrency']}"


def page(docs: list[dict[str, Any]]) -> str:
    import plotly.graph_objects as go
    import plotly.io as pio

    labels = [_label(d) for d in docs]
    latency = go.Figure(
        [
            go.Scatter(
                x=[p.replace("_", ".") for p in PERCENTILES],
                y=[d["latency_ms"][p] for p in PERCENTILES],
                mode="lines+markers",
                name=label,
            )
            for d, label in zip(docs, labels, strict=True)
        ],
        layout={"title": "Latency by percentile (ms, client side)", "yaxis": {"type": "log"}},
    )
    throughput = go.Figure(
        [go.Bar(x=labels, y=[d["throughput"]["rps"] for d in docs], name="requests/s")],
        layout={"title": "Throughput (requests/s)"},
    )
    figures = [latency, throughput]
    for doc, label in zip(docs, labels, strict=True):
        bins = doc["histogram"]
        if bins:
            figures.append(go.Figure(
                [go.Bar(x=[f"{b['from_ms']:.3f}-{b['to_ms']:.3f}" for b in bins],
                        y=[b["count"] for b in bins])],
                layout={"title": f"Latency histogram (ms, log-scale bins): {label}"},
            ))  # fmt: skip
    charts = [
        pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0))
        for i, fig in enumerate(figures)
    ]
    configs = "".join(
        f"<h3>{html.escape(label)}</h3><pre>{html.escape(json.dumps(d['config'], indent=2))}</pre>"
        for d, label in zip(docs, labels, strict=True)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>zserve bench</title></head>"
        "<body style='font-family: sans-serif'><h1>zserve bench</h1>"
        + "".join(charts)
        + "<h2>Configuration</h2>"
        + configs
        + "</body></html>\n"
    )
