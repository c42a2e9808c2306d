"""``zserve start``: serve a deployment, in the foreground or detached."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from zserve.cli._logfiles import KEEP_LOGS, logs_dir, prune_logs
from zserve.cli._output import print_json
from zserve.errors import ServerError
from zserve.records import CaptureMode
from zserve.settings import LogLevel, Settings, store_url_of

if TYPE_CHECKING:
    from zserve.records import DeploymentRecord
    from zserve.registry import ServerEntry

#: How long `start --detach` waits for /health before giving up (seconds).
DEFAULT_START_TIMEOUT = 60.0
BROKER_HELP = (
    "The job broker of these servers: memory://, sqlite:///path/broker.db, or "
    "redis://[:password@]host:port/db shared by several hosts (default ZSERVE_BROKER_URL; else "
    "memory:// for one worker, a SQLite file in ZSERVE_HOME for several)."
)
STORE_HELP = (
    "The store the deployment is read from and tracked runs go to: a SQLAlchemy URL "
    "(sqlite:///path/zserve.db, postgresql+psycopg://user:pw@host/db) or a SQLite file's path "
    "(default ZSERVE_STORE_URL). It must exist: deploy into it first."
)
#: How often `start --detach` looks for the server's registry entry while it starts (seconds).
POLL_S = 0.01


def start(
    deployment: str = typer.Option(
        ..., "--deployment", "-d", help="The deployment: id, name (latest), or name:version."
    ),
    host: str | None = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(
        None, "--port", help="Port to bind (default 8001; 0 picks a free one)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-w", help="Worker processes (default 1; uvicorn restarts dead ones)."
    ),
    capture_default: CaptureMode | None = typer.Option(
        None, "--capture-default", help="Default capture mode (default none)."
    ),
    log_level: LogLevel | None = typer.Option(
        None, "--log-level", help="Log level (default info)."
    ),
    host_id: str | None = typer.Option(
        None, "--host-id", help="This host's name among several (default hostname:port)."
    ),
    broker: str | None = typer.Option(None, "--broker", metavar="URL", help=BROKER_HELP),
    store: str | None = typer.Option(None, "--store", metavar="URL", help=STORE_HELP),
    no_ui: bool = typer.Option(
        False, "--no-ui", help="Leave the dashboard at /ui out (ZSERVE_UI=0)."
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Run in the background; return once /health answers."
    ),
    start_timeout: float = typer.Option(
        DEFAULT_START_TIMEOUT, "--start-timeout", help="With --detach: seconds to wait for /health."
    ),
    json_: bool = typer.Option(False, "--json", help="With --detach: print one JSON document."),
) -> None:
    """Serve a deployment: in the foreground until Ctrl-C (drains, exits 0), or --detach."""
    settings = Settings.from_env(
        host=host, port=port, workers=workers, capture_default=capture_default,
        log_level=log_level, host_id=host_id, broker_url=broker,
        store_url=store_url_of(store) if store else None, ui=False if no_ui else None,
    )  # fmt: skip
    # Detached, the server process starts first and imports what it serves with while this
    # one imports the store (SQLAlchemy alone takes 0.2 s), reads it and extracts the snapshot;
    # then it is handed the settings and the record it serves on its stdin: it never opens the
    # store. Nothing heavy is imported here before it is spawned.
    spawned = spawn(settings, handed=True) if detach else None
    try:
        from zserve.server.boot import open_address_warning, serve
        from zserve.store import Store

        if store:  # one named by --store must hold the deployment: never made here
            from zserve.store.revision import check_exists

            check_exists(settings.store_url)
        with Store(settings.store_url, migrate=settings.store_migrate) as opened:
            record = opened.get_deployment(deployment)
        settings = settings.replace(deployment_id=record.id)
        if spawned is None:  # serve() prints the open-address warning itself
            raise typer.Exit(serve(settings, record))
        if warning := open_address_warning(settings):
            typer.echo(warning, err=True)
        from zserve.server.snapshot import prepare

        served, lines = prepare(settings, record)
        for line in lines:
            typer.echo(line, err=True)
        spawned.hand(settings, served)
    except BaseException:
        if spawned is not None:
            spawned.abandon()
        raise
    assert spawned is not None
    _report(settings, *spawned.wait_ready(settings, start_timeout), json_)


def _report(settings: Settings, entry: ServerEntry, log_file: Path, json_: bool) -> None:
    worker_pids = sorted(p.pid for p in entry.worker_processes())
    if json_:
        print_json({
            "server_id": entry.id, "url": entry.url, "port": entry.port, "pid": entry.pid,
            "worker_pids": worker_pids, "deployment": entry.deployment,
            "deployment_id": entry.deployment_id, "log_file": str(log_file),
        })  # fmt: skip
        return
    typer.echo(f"Started server {entry.id}: {entry.url}")
    typer.echo(f"  deployment {entry.deployment}, {settings.workers} worker(s), pid {entry.pid}")
    typer.echo(f"  logs: zserve logs {entry.id}    stop: zserve stop {entry.id}")


def launch(
    settings: Settings, start_timeout: float, record: DeploymentRecord | None = None
) -> tuple[ServerEntry, Path]:
    """Start a detached server for ``settings`` (its deployment id set) and return once its
    workers are up and ``/health`` answers: (its registry entry, its log file). ServerError
    (with the server's own error line) when it fails or is not ready in time. ``record``, the
    deployment already read, is handed to the server, which then need not open the store."""
    spawned = spawn(settings, handed=record is not None)
    if record is not None:
        spawned.hand(settings, record)
    return spawned.wait_ready(settings, start_timeout)


class Spawned:
    """A detached server process that is starting: ``hand`` it what it serves (when it was
    spawned ``handed``), then ``wait_ready``; ``abandon`` it if the start fails before."""

    def __init__(self, proc: subprocess.Popen[bytes], server_id: str, log_file: Path) -> None:
        self.proc, self.server_id, self.log_file = proc, server_id, log_file

    def hand(self, settings: Settings, record: DeploymentRecord) -> None:
        from zserve.server.boot import handover

        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(handover(settings, record))
            self.proc.stdin.close()
        except OSError:
            pass  # it died already: wait_ready reports its own error

    def abandon(self) -> None:
        from zserve import registry

        registry.stop_tree(self.proc.pid, timeout=0)
        self.log_file.unlink(missing_ok=True)

    def wait_ready(self, settings: Settings, start_timeout: float) -> tuple[ServerEntry, Path]:
        from zserve import registry

        proc, log_file = self.proc, self.log_file
        deadline = time.monotonic() + start_timeout
        entry = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerError(_startup_failure(log_file, proc.returncode))
            entry = next(
                (s for s in registry.list_servers(settings.home) if s.id == self.server_id), None
            )
            # The server registers once its socket listens: from then on a request waits in
            # the socket's queue until the app answers it, so one long request replaces polls.
            wait_s = min(2.0, max(deadline - time.monotonic(), 0.01))
            if (
                entry is not None
                and len(entry.worker_processes()) >= settings.workers
                and _health_status(entry, wait_s) == 200
            ):
                break
            time.sleep(POLL_S)
        else:
            registry.stop_tree(proc.pid, timeout=0)
            raise ServerError(
                f"The server did not answer /health within {start_timeout:g} s and was stopped; "
                f"its log: {log_file}"
            )
        assert entry is not None
        return entry, log_file


def spawn(settings: Settings, handed: bool) -> Spawned:
    """Start ``python -m zserve.server.app`` detached, its output in a new log file. ``handed``:
    it waits for its settings and deployment on stdin (``Spawned.hand``) instead of reading
    ``settings``' deployment from the store."""
    from zserve import registry
    from zserve.paths import private_dir, private_file
    from zserve.registry import LOG_FILE_ENV, SERVER_ID_ENV
    from zserve.settings import HANDED_ENV, SETTINGS_ENV

    server_id = registry.new_server_id()
    private_dir(settings.home)
    logs = private_dir(logs_dir(settings.home))
    log_file = private_file(logs / f"{server_id}.log")
    env = {**os.environ, SETTINGS_ENV: settings.to_json(), SERVER_ID_ENV: server_id,
           LOG_FILE_ENV: str(log_file)}  # fmt: skip
    if handed:
        env[HANDED_ENV] = "1"
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            # -P: the working directory is not on sys.path, so a module missing from the
            # snapshot fails loudly instead of being imported from the working copy
            [sys.executable, "-P", "-m", "zserve.server.app"],
            stdin=subprocess.PIPE if handed else subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # Ctrl-C in this terminal must not reach the server
        )  # fmt: skip
    spawned = Spawned(proc, server_id, log_file)
    # of servers not running, the newest are kept (this one's is the newest): while it starts
    prune_logs(settings.home, keep=KEEP_LOGS)
    return spawned


def _health_status(entry: ServerEntry, timeout: float) -> int | None:
    """The status of ``GET /health`` (None when there is no answer in ``timeout`` seconds).
    The standard library's client: httpx would take longer to import than the wait."""
    import http.client

    conn = http.client.HTTPConnection(entry.host, entry.port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _startup_failure(log_file: Path, code: int) -> str:
    """The server's own error line, or the end of its log."""
    lines = log_file.read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if line.startswith("Error: "):
            return line.removeprefix("Error: ")
    tail = "\n".join(lines[-10:])
    return f"The server exited with code {code} before it was ready; its log ({log_file}):\n{tail}"
