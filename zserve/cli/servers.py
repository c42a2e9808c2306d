"""``zserve ps``, ``zserve logs`` and ``zserve stop``: the servers this machine runs."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zserve.cli._format import mib, uptime
from zserve.cli._output import print_json
from zserve.errors import NotFound, UsageError
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
    server: str = typer.Argument(..., help=SERVER_HELP + " A stopped server's id works too."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int | None = typer.Option(None, "--tail", "-n", help="Only the last N lines."),
) -> None:
    """Print a detached server's log (-f to follow it until the server stops)."""
    from zserve import registry

    home = Settings.from_env().home
    entry: ServerEntry | None
    try:
        entry = registry.find_server(home, server)
        log_file = Path(entry.log_file) if entry.log_file else None
    except NotFound:
        if not SERVER_ID.fullmatch(server):  # a stopped server's id, never a path
            raise
        entry, log_file = None, Path(home) / "logs" / f"{server}.log"
        if not log_file.is_file():
            raise
    if log_file is None:
        raise UsageError(f"Server {server} runs in the foreground: its log is its terminal")
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
    server: str | None = typer.Argument(None, help=SERVER_HELP),
    all_: bool = typer.Option(False, "--all", help="Stop every running server."),
    timeout: float = typer.Option(
        30.0, "--timeout", help="Seconds to let in-flight work drain before SIGKILL."
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Stop a server (or --all): SIGTERM, let in-flight work drain, then SIGKILL what is left."""
    from zserve import registry

    home = Settings.from_env().home
    if all_ == (server is not None):
        raise UsageError("Name one server to stop, or pass --all")
    if all_:
        targets = registry.list_servers(home, leftovers=True)
    else:
        targets = [registry.find_server(home, server, leftovers=True)]
    stopped = [_stop(home, entry, timeout) for entry in targets]
    if json_:
        print_json({"stopped": stopped})
        return
    if not stopped:
        typer.echo("No servers running.")
    for s in stopped:
        how = "drained" if s["graceful"] else f"killed after {timeout:g} s"
        typer.echo(f"Stopped server {s['server_id']} ({s['deployment']}, {s['url']}): {how}")


def _stop(home: str, entry: ServerEntry, timeout: float) -> dict[str, Any]:
    from zserve import registry

    if entry.is_alive():
        graceful = registry.stop_tree(entry.pid, timeout)
    else:  # a killed supervisor's leftover workers (or nothing)
        graceful = registry.stop_processes(entry.leftover_workers(), timeout)
    registry.unregister(home, entry.id)
    return {"server_id": entry.id, "pid": entry.pid, "deployment": entry.deployment,
            "url": entry.url, "graceful": graceful}  # fmt: skip
