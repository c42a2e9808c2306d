"""``zserve ps``, ``zserve logs`` and ``zserve stop``: the servers this machine runs."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zserve.cli._format import mib, uptime
from zserve.cli._logfiles import logs_dir, prune_logs
from zserve.cli._output import print_json
from zserve.errors import NotFound, ServerUnreachable, UsageError
from zserve.settings import Settings

if TYPE_CHECKING:
    from zserve.registry import ServerEntry

SERVER_HELP = "A running server: its id (or a unique prefix), its port, or its deployment name."
#: psutil's first cpu_percent() reading is always 0.0: sample over this many seconds.
CPU_SAMPLE_S = 0.2
#: A server id as the registry makes them (hex): what `logs` accepts for a stopped server.
SERVER_ID = re.compile(r"[0-9a-f]{1,32}")


def ps(json_: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List running servers: deployment, URL, status, workers, CPU and memory, uptime."""
    from zserve import registry

    entries = registry.list_servers(Settings.from_env().home, leftovers=True)
    rows = _sample(entries)
    if json_:
        print_json({"servers": rows})
        return
    if not rows:
        typer.echo("No servers running. Start one with `zserve start --deployment NAME --detach`.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("ID", "DEPLOYMENT", "URL", "STATUS", "WORKERS", "CPU", "MEMORY", "UPTIME"):
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(
            row["id"], row["deployment"], row["url"], row["status"], str(row["workers"]),
            f"{row['cpu_percent']:.1f}%", mib(row["memory_bytes"]), uptime(row["uptime_s"]),
        )  # fmt: skip
        for proc in row["processes"]:
            table.add_row(
                "", f"  {proc['role']} pid {proc['pid']}", "", "", "",
                f"{proc['cpu_percent']:.1f}%", mib(proc["memory_bytes"]), "",
            )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 1000).print(table)


def _sample(entries: list[ServerEntry]) -> list[dict[str, Any]]:
    import httpx
    import psutil

    procs: dict[str, list[tuple[str, psutil.Process]]] = {}
    alive = {entry.id: entry.is_alive() for entry in entries}
    for entry in entries:
        workers = entry.worker_processes()
        if not alive[entry.id]:  # its supervisor was killed: workers that outlived it
            procs[entry.id] = [("leftover worker", w) for w in workers]
            continue
        main = [] if entry.workers == 1 else [("supervisor", entry.process())]
        procs[entry.id] = main + [("worker", w) for w in workers]
        for _, p in procs[entry.id]:
            _quiet(p.cpu_percent, None)
    if entries:
        time.sleep(CPU_SAMPLE_S)
    rows = []
    for entry in entries:
        processes = []
        for role, p in procs[entry.id]:
            cpu = _quiet(p.cpu_percent, None) or 0.0
            mem = getattr(_quiet(p.memory_info), "rss", 0)
            processes.append({"pid": p.pid, "role": role, "cpu_percent": cpu,
                              "memory_bytes": mem})  # fmt: skip
        if not alive[entry.id]:
            status = f"server gone, {len(processes)} leftover worker(s): `zserve stop {entry.id}`"
        else:
            try:
                code = httpx.get(entry.url + "/health", timeout=1).status_code
                status = "healthy" if code == 200 else f"unhealthy ({code})"
            except httpx.TransportError:
                status = "not answering"
        rows.append({
            **entry.to_dict(),
            "status": status,
            "uptime_s": round(time.time() - entry.started_at, 1),
            "cpu_percent": round(sum(p["cpu_percent"] for p in processes), 1),
            "memory_bytes": sum(p["memory_bytes"] for p in processes),
            "processes": processes,
        })  # fmt: skip
    return rows


def _quiet(fn: Any, *args: Any) -> Any:
    import psutil

    try:
        return fn(*args)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def logs(
    server: str | None = typer.Argument(
        None, help=SERVER_HELP + " A stopped server's id works too. Default: the only one."
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int | None = typer.Option(None, "--tail", "-n", help="Only the last N lines."),
    prune: bool = typer.Option(
        False, "--prune", help="Delete the logs of every server that is not running."
    ),
) -> None:
    """Print a detached server's log (-f to follow it until the server stops), or --prune."""
    from zserve import registry

    home = Settings.from_env().home
    if prune:
        if server is not None or follow or tail is not None:
            raise UsageError("--prune takes no server, --follow or --tail")
        count, freed = prune_logs(home)
        typer.echo(f"Deleted {count} log(s) of servers not running ({freed} bytes freed)")
        return
    entry: ServerEntry | None
    try:
        entry = registry.find_server(home, server)
        log_file = Path(entry.log_file) if entry.log_file else None
    except NotFound:
        if server is None or not SERVER_ID.fullmatch(server):  # a stopped server's id, no path
            raise
        entry, log_file = None, logs_dir(home) / f"{server}.log"
        if not log_file.is_file():
            raise
    if log_file is None:
        assert entry is not None
        raise UsageError(f"Server {entry.id} runs in the foreground: its log is its terminal")
    with log_file.open("r", errors="replace") as fh:
        lines = fh.readlines()
        sys.stdout.writelines(lines[-tail:] if tail else lines)
        sys.stdout.flush()
        while follow and (entry is None or entry.is_alive()):
            line = fh.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.1)


def stop(
    servers: list[str] | None = typer.Argument(
        None,
        metavar="SERVER",
        help=SERVER_HELP + " Several may be named; default: the only running one.",
    ),
    all_: bool = typer.Option(False, "--all", help="Stop every running server."),
    timeout: float = typer.Option(
        30.0, "--timeout", help="Seconds to let in-flight work drain before SIGKILL."
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Stop servers (or --all) at once: SIGTERM, let in-flight work drain, then SIGKILL what is
    left. Returns as soon as they are gone."""
    from zserve import registry

    home = Settings.from_env().home
    if all_ and servers:
        raise UsageError("Name servers to stop, or pass --all, not both")
    if all_:
        targets = registry.list_servers(home, leftovers=True)
    elif servers:
        found = [registry.find_server(home, ref, leftovers=True) for ref in servers]
        targets = list({entry.id: entry for entry in found}.values())
    else:
        targets = registry.list_servers(home, leftovers=True)
        if not targets:
            raise ServerUnreachable("No zserve server is running")  # exit 3, as for invoke
        if len(targets) > 1:
            raise UsageError(
                f"{len(targets)} servers are running; name the ones to stop (id, port or "
                f"deployment), or pass --all: {registry.describe(targets)}"
            )
    stopped = _stop(home, targets, timeout)
    if json_:
        print_json({"stopped": stopped})
        return
    if not stopped:
        typer.echo("No servers running.")
    for s in stopped:
        how = "drained" if s["graceful"] else f"killed after {timeout:g} s"
        typer.echo(f"Stopped server {s['server_id']} ({s['deployment']}, {s['url']}): {how}")


def _stop(home: str, entries: list[ServerEntry], timeout: float) -> list[dict[str, Any]]:
    """Signal every server, then wait for all of them together."""
    from zserve import registry

    groups = []
    for entry in entries:
        if entry.is_alive():
            groups.append(registry.term_tree(entry.pid, signal_it=timeout > 0))
        else:  # a killed supervisor's leftover workers (or nothing)
            workers = entry.leftover_workers()
            groups.append(registry.term_processes(workers) if timeout > 0 else workers)
    graceful = registry.reap(groups, timeout)
    stopped = []
    for entry, ok in zip(entries, graceful, strict=True):
        registry.unregister(home, entry.id)
        stopped.append({"server_id": entry.id, "pid": entry.pid, "deployment": entry.deployment,
                        "url": entry.url, "graceful": ok})  # fmt: skip
    return stopped
