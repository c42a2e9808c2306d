"""``zserve bench``: measure a running server (or one it starts for the run), print the result
with its configuration, compare it with a saved one, and gate a CI script on it (exit 4).

One run, or a sweep: every combination of ``--concurrency``, ``--capture`` and (with
``--start``) ``--workers`` lists, in one comparison table."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from zserve._version import __version__
from zserve.cli._output import print_document
from zserve.cli._suggest import deployment_names, running_deployments
from zserve.cli._target import SERVER_OPTION, URL_OPTION
from zserve.errors import ServerError, UsageError
from zserve.settings import Settings

__all__ = ["bench"]

#: Without -n or -d, a run lasts this long (seconds).
DEFAULT_DURATION_S = 10.0


def bench(
    requests: int | None = typer.Option(None, "--requests", "-n", min=1,
                                        help="Measure this many requests."),
    duration: str | None = typer.Option(None, "--duration", "-d",
                                        help="Measure this long: 30s, 2m (default 10s)."),
    concurrency: str = typer.Option("1", "--concurrency", "-c",
                                    help="Connections at once; a list (1,4,16) sweeps."),
    warmup: str = typer.Option("0", "--warmup",
                               help="Not counted first: a number of requests, or 5s."),
    rate: float | None = typer.Option(None, "--rate", min=0.001, help="Open loop: requests "
                                      "per second, latency from each one's due time."),
    param: list[str] | None = typer.Option(None, "--param", "-p",
                                           help="A parameter as name=value (repeatable)."),
    params_json: str | None = typer.Option(None, "--params-json",
                                           help="Parameters as JSON, @file.json or @-."),
    capture: str | None = typer.Option(None, "--capture",
                                       help="Capture mode; a list (none,metadata,full) sweeps."),
    mode: str = typer.Option("sync", "--mode", help="sync, or async: submit, then follow the "
                             "job's stream to its end."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.001,
                                  help="Seconds before a request counts as a timeout."),
    client_procs: int = typer.Option(1, "--client-procs", min=1,
                                     help="Client processes, when one cannot keep up."),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = typer.Option(None, "--deployment",
                                          help="The running server of this deployment.",
                                          autocompletion=running_deployments),
    start: str | None = typer.Option(None, "--start", help="Start a server of this deployment "
                                     "(name or id) for the run, and stop it after.",
                                     autocompletion=deployment_names),
    workers: str = typer.Option("1", "--workers", "-w",
                                help="With --start: worker processes; a list (1,2) sweeps."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
    save: Path | None = typer.Option(None, "--save", help="Write the result (JSON) here."),
    compare_file: str | None = typer.Option(None, "--compare",
                                            help="Compare with a result saved by --save."),
    html: Path | None = typer.Option(None, "--html", help="Write a report page with charts "
                                     "(needs the report extra)."),
    max_p50_ms: float | None = typer.Option(None, "--max-p50-ms", help="Gate: exit 4 above."),
    max_p99_ms: float | None = typer.Option(None, "--max-p99-ms", help="Gate: exit 4 above."),
    min_rps: float | None = typer.Option(None, "--min-rps", help="Gate: exit 4 below."),
    max_error_rate: float | None = typer.Option(None, "--max-error-rate", min=0.0, max=1.0,
                                                help="Gate: exit 4 above (0.01 = 1%)."),
) -> None:  # fmt: skip
    """Measure latency and throughput: p50 to p99.9 (HDR histogram), requests/s and errors,
    beside the server's own time. Gates exit 4 on a miss; Ctrl-C prints what was measured."""
    from zserve.bench import compare, gates, load_saved
    from zserve.cli import _bench_view as view

    if mode not in ("sync", "async"):
        raise UsageError(f"--mode {mode!r}: use sync or async")
    if start and (url or server or deployment):
        raise UsageError("--start starts its own server: leave out --url, --server, --deployment")
    levels = _ints(concurrency, "--concurrency")
    worker_counts = _ints(workers, "--workers")
    if len(worker_counts) > 1 and not start:
        raise UsageError("--workers sweeps servers that bench starts: add --start DEPLOYMENT")
    captures: list[str | None] = [c.strip() for c in capture.split(",")] if capture else [None]
    before = load_saved(compare_file) if compare_file else None
    if html is not None:
        view.check_html()
    duration_s = _seconds(duration, "--duration") if duration else None
    if requests is None and duration_s is None:
        duration_s = DEFAULT_DURATION_S
    warm_n, warm_s = (0, _seconds(warmup, "--warmup")) if warmup.endswith(("s", "m")) else (
        _count(warmup), 0.0)  # fmt: skip
    shape = {"requests": requests, "duration_s": duration_s, "warmup_requests": warm_n,
             "warmup_s": warm_s, "rate": rate, "timeout_s": timeout, "mode": mode}  # fmt: skip
    if before is not None and len(levels) * len(captures) * len(worker_counts) > 1:
        raise UsageError("--compare takes one run, not a sweep")
    docs: list[dict[str, Any]] = []
    for count in worker_counts if start else [None]:
        with view.Target(start, count, url, server, deployment) as target:
            body_params = target.parameters(param, params_json)
            for cap, level in itertools.product(captures, levels):
                config = _config(target, shape, level, cap, client_procs, body_params)
                docs.append(_run(target, config, body_params, level, cap, client_procs, json_))
                if docs[-1]["interrupted"]:
                    break
        if docs[-1]["interrupted"]:
            break
    interrupted = bool(docs[-1]["interrupted"])
    result: dict[str, Any] = docs[0] if len(docs) == 1 else {"json_version": 1, "runs": docs}
    if save is not None:
        save.write_text(json.dumps(result, indent=2) + "\n")
    comparison = compare(docs[0], before) if before is not None else None
    if html is not None:
        view.write_html(html, docs)
    if json_:
        print_document({**result, "comparison": comparison} if comparison else result)
    else:
        view.show(docs, comparison)
    limits = {"max_p50_ms": max_p50_ms, "max_p99_ms": max_p99_ms, "min_rps": min_rps,
              "max_error_rate": max_error_rate}  # fmt: skip
    missed = [line for doc in docs for line in gates(doc, limits)]
    for line in missed:
        typer.echo(f"Error: gate missed: {line}", err=True)
    if interrupted:
        raise typer.Exit(130)
    if missed:
        raise typer.Exit(4)


def _run(
    target: Any,
    config: dict[str, Any],
    params: dict[str, Any],
    level: int,
    capture: str | None,
    procs: int,
    quiet: bool,
) -> dict[str, Any]:
    from zserve.bench import LoadSpec, document, run_load
    from zserve.cli import _bench_view as view

    body: dict[str, Any] = {"parameters": params}
    if capture:
        body["capture_override"] = {"mode": capture}
    target.probe(body)  # a request the server refuses stops here, with its message
    spec = LoadSpec(
        url=target.url, body=json.dumps(body).encode(), auth_key=Settings.from_env().auth_key,
        mode=config["mode"], concurrency=level, requests=config["requests"],
        duration_s=config["duration_s"], warmup_requests=config["warmup_requests"],
        warmup_s=config["warmup_s"], rate=config["rate"], timeout_s=config["timeout_s"],
    )  # fmt: skip
    with view.progress(spec, enabled=not quiet and sys.stderr.isatty()) as tick:
        tally = run_load(spec, procs, on_tick=tick)
    if tally.refused is not None:
        raise view.refused(*tally.refused)
    if tally.done == 0 and not tally.interrupted:
        raise ServerError(f"No request to {target.url} was answered: {dict(tally.errors)}")
    return document(tally, config)


def _config(
    target: Any,
    shape: dict[str, Any],
    level: int,
    capture: str | None,
    procs: int,
    params: dict[str, Any],
) -> dict[str, Any]:
    """What a run ran against: printed with every number."""
    return {
        "url": target.url, **shape, "concurrency": level, "client_procs": procs,
        "capture": capture or target.status.get("capture_default"), "parameters": params,
        "server": target.server_info(), "zserve_version": __version__,
        "cpu_count": os.cpu_count(), "started_at": time.time(),
    }  # fmt: skip


def _ints(value: str, option: str) -> list[int]:
    try:
        found = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} {value!r}: give a number, or a list like 1,4,16") from None
    if not found or min(found) < 1:
        raise UsageError(f"{option} {value!r}: give numbers of at least 1")
    return found


def _count(value: str) -> int:
    try:
        found = int(value)
    except ValueError:
        raise UsageError(
            f"--warmup {value!r}: give a number of requests, or seconds (5s)"
        ) from None
    if found < 0:
        raise UsageError(f"--warmup {value!r} is negative")
    return found


def _seconds(value: str, option: str) -> float:
    scale = 60.0 if value.endswith("m") else 1.0
    try:
        found = float(value.rstrip("sm")) * scale
    except ValueError:
        raise UsageError(f"{option} {value!r}: give seconds (30, 30s) or minutes (2m)") from None
    if found <= 0:
        raise UsageError(f"{option} {value!r} must be more than 0")
    return found
