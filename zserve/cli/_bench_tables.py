"""``zserve bench``'s report drawn with rich: one run (its configuration, counts, latency
beside the server's own time, a histogram), a sweep's comparison table, a ``--compare`` table,
and the warnings a number must not be read without."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["comparison", "single", "sweep", "warnings"]

COLUMNS = ("min", "p50", "p90", "p95", "p99", "p99_9", "max")
BAR = 40


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def describe(doc: dict[str, Any]) -> str:
    c, s = doc["config"], doc["config"]["server"]
    load = f"open loop at {c['rate']:g} req/s" if c.get("rate") else "closed loop"
    amount = f"{c['requests']} requests" if c.get("requests") else f"{c['duration_s']:g} s"
    started = f", started in {s['startup_s']:.2f} s" if s.get("startup_s") is not None else ""
    return (
        f"{s['deployment']} ({s['pipeline']}) at {c['url']}: {s['workers']} worker(s), "
        f"capture {c['capture']}, server {s['version']}{started}\n"
        f"{c['mode']} invokes, {load}, concurrency {c['concurrency']}, {amount}, "
        f"{c['client_procs']} client process(es), zserve {c['zserve_version']}, "
        f"{c['cpu_count']} CPUs"
    )


def single(console: Console, doc: dict[str, Any]) -> None:
    console.print(describe(doc), highlight=False)
    req, tp = doc["requests"], doc["throughput"]
    kinds = ", ".join(f"{k}: {v}" for k, v in doc["errors"]["by_kind"].items())
    console.print(
        f"requests {req['done']:,}: {req['ok']:,} ok, {req['errors']:,} errors "
        f"({req['error_rate'] * 100:.2f}%){f' ({kinds})' if kinds else ''}; "
        f"{tp['rps']:,.1f} req/s over {tp['elapsed_s']:.2f} s; client CPU "
        f"{doc['client']['cpu_percent']:.0f}% of a core per process",
        highlight=False,
    )
    table = Table(box=None, header_style="bold")
    table.add_column("latency (ms)")
    for name in COLUMNS:
        table.add_column(name.replace("_", "."), justify="right")
    table.add_row("client", *(_ms(doc["latency_ms"][n]) for n in COLUMNS))
    if doc["first_event_ms"]:
        table.add_row("first event", *(_ms(doc["first_event_ms"][n]) for n in COLUMNS))
    if doc["server_ms"]:
        table.add_row("server engine", *(_ms(doc["server_ms"]["engine"][n]) for n in COLUMNS))
    console.print(table)
    if doc["server_ms"] and doc["server_ms"]["steps_mean"]:
        steps = ", ".join(f"{k} {v:.3f}" for k, v in doc["server_ms"]["steps_mean"].items())
        console.print(f"server time per step (mean ms): {steps}", highlight=False)
    _histogram(console, doc["histogram"])


def _histogram(console: Console, bins: list[dict[str, Any]]) -> None:
    if not bins:
        return
    top = max(b["count"] for b in bins) or 1
    console.print("latency histogram (client, log scale):")
    for b in bins:
        bar = "█" * round(BAR * b["count"] / top)
        console.print(f"  {b['from_ms']:>9.3f} - {b['to_ms']:<9.3f} ms {bar} {b['count']:,}",
                      highlight=False)  # fmt: skip


def sweep(console: Console, docs: list[dict[str, Any]]) -> None:
    first = docs[0]["config"]
    console.print(f"{first['server']['deployment']} at sweep of {len(docs)} runs, "
                  f"{first['mode']} invokes, zserve {first['zserve_version']}, "
                  f"{first['cpu_count']} CPUs", highlight=False)  # fmt: skip
    table = Table(box=None, header_style="bold")
    for col in ("workers", "capture", "conc.", "req/s", "p50", "p90", "p99", "p99.9", "max",
                "errors", "server p50", "client CPU"):  # fmt: skip
        table.add_column(col, justify="right")
    for doc in docs:
        c, lat = doc["config"], doc["latency_ms"]
        server = doc["server_ms"]["engine"]["p50"] if doc["server_ms"] else None
        workers = str(c["server"]["workers"])
        if c["server"].get("startup_s") is not None:
            workers += f" (up in {c['server']['startup_s']:.1f} s)"
        table.add_row(
            workers, str(c["capture"]), str(c["concurrency"]),
            f"{doc['throughput']['rps']:,.1f}", *(_ms(lat[n]) for n in
                                                 ("p50", "p90", "p99", "p99_9", "max")),
            str(doc["requests"]["errors"]), _ms(server), f"{doc['client']['cpu_percent']:.0f}%",
        )  # fmt: skip
    console.print(table)
    console.print("latency in ms; server p50: the engine's own time (Server-Timing)")


def comparison(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(box=None, header_style="bold", title="against the saved result")
    for col in ("metric", "before", "now", "change", "verdict"):
        table.add_column(col, justify="right")
    style = {"better": "green", "worse": "red"}
    for row in rows:
        change = "-" if row["change"] is None else f"{row['change'] * 100:+.1f}%"
        table.add_row(row["metric"], str(row["before"]), str(row["now"]), change,
                      f"[{style.get(row['verdict'], 'default')}]{row['verdict']}[/]")  # fmt: skip
    console.print(table)


def warnings(doc: dict[str, Any]) -> list[str]:
    """What the numbers must not be read without."""
    found = []
    client, tp = doc["client"], doc["throughput"]
    if client["saturated"]:
        found.append(
            f"the client was the bottleneck: its CPU was {client['cpu_percent']:.0f}% of a core "
            "per process; add --client-procs (on a machine with cores to spare)"
        )
    if tp["sustained"] is False:
        found.append(f"the server could not sustain {tp['target_rate']:g} req/s: it achieved "
                     f"{tp['achieved_rate']:g}")  # fmt: skip
    if doc["interrupted"]:
        found.append("interrupted: these are the requests measured until then")
    return found
