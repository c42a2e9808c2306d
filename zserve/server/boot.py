"""Start a server process: the parent resolves, checks and compiles everything once, binds the
socket itself, then hands uvicorn the socket and (for several workers) the app factory
``app_from_env``, which rebuilds the app in each worker from the environment.

Failing fast in the parent matters: uvicorn's supervisor restarts a worker that fails at import
forever, so nothing that can fail at start is left to the workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zserve import registry
from zserve._version import __version__
from zserve.errors import (
    PortInUse,
    ResourceFailed,
    ServerError,
    SourceChanged,
    UsageError,
    ZServeError,
)
from zserve.paths import broker_file, private_dir, private_file
from zserve.records import DeploymentRecord
from zserve.server.snapshot import prepare
from zserve.settings import HANDED_ENV, SETTINGS_ENV, Settings, default_host_id

if TYPE_CHECKING:
    from fastapi import FastAPI

    from zserve.engine.plan import Plan

__all__ = [
    "DEPLOYMENT_ENV",
    "app_from_env",
    "bind_socket",
    "handover",
    "main",
    "resolve_deployment",
    "serve",
    "uvicorn_options",
]

#: Where the parent hands the resolved deployment record to its workers.
DEPLOYMENT_ENV = "ZSERVE_DEPLOYMENT_JSON"
#: The supervisor's pid, for its workers: they stop when it is gone.
SUPERVISOR_ENV = registry.SUPERVISOR_ENV
#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1

logger = logging.getLogger("zserve.server")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: prometheus_client's switch to multiprocess mode, read once when it is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The name of a server's metrics folder begins with this, then the server's pid and a dash.
METRICS_PREFIX = "zserve-metrics-"


def open_address_warning(settings: Settings) -> str | None:
    """A warning when the server will be reachable beyond this machine without a key."""
    if settings.host in LOOPBACK or settings.auth_key:
        return None
    return (
        f"Warning: listening on {settings.host} without an auth key: anyone who can reach "
        "this address can run the pipeline. Set ZSERVE_AUTH_KEY."
    )


def resolve_deployment(settings: Settings) -> DeploymentRecord:
    if not settings.deployment_id:
        raise UsageError(
            "No deployment given: set ZSERVE_DEPLOYMENT_ID (or ZENML_PIPELINE_DEPLOYMENT_ID) to "
            "a deployment id or name; `zserve deployments list` shows them"
        )
    from zserve.store import Store

    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        return store.get_deployment(settings.deployment_id)


def bind_socket(host: str, port: int, home: str | None = None) -> socket.socket:
    """A listening socket; PortInUse names the zserve server of ``home`` that holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(_port_holder(host, port, home)) from None
        raise ServerError(f"Cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _port_holder(host: str, port: int, home: str | None) -> str:
    held = [s for s in registry.list_servers(home) if s.port == port] if home else []
    if held:
        return (
            f"Port {port} on {host} is in use by zserve server {held[0].id} (deployment "
            f"{held[0].deployment}): stop it with `zserve stop {held[0].id}`, or pick a free "
            "port with --port 0"
        )
    return (
        f"Port {port} on {host} is in use by another program (not a zserve server of this "
        "ZSERVE_HOME): stop it, or pick a free port with --port 0"
    )


def serve(
    settings: Settings,
    record: DeploymentRecord | None = None,
    *,
    server_id: str | None = None,
    log_file: str | None = None,
) -> int:
    """Serve ``record`` (default: the deployment ``settings`` names) until stopped.

    The server is listed in the registry (``$ZSERVE_HOME/servers/``) while it runs, under
    ``server_id`` (default: a new one); ``log_file`` is recorded for ``zserve logs``.
    """
    from zserve.engine.deployments import load_plan

    if record is None:
        record = resolve_deployment(settings)
    if not (record.code_dir and os.path.isdir(record.code_dir)):  # else `start` prepared it
        record, warnings = prepare(settings, record)
        for line in warnings:
            print(line, file=sys.stderr, flush=True)
    try:
        plan = load_plan(record)
    except ZServeError as err:
        raise ServerError(f"Deployment {record.ref} cannot be loaded: {err}") from None
    if warning := open_address_warning(settings):
        print(warning, file=sys.stderr)
    sock = bind_socket(settings.host, settings.port, settings.home)
    port = sock.getsockname()[1]
    # the port bound (--port 0 picks one) names the host when ZSERVE_HOST_ID does not
    settings = settings.replace(port=port, host_id=settings.host_id or default_host_id(port))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    entry = registry.this_process_entry(
        id=server_id or registry.new_server_id(),
        url=f"http://{host}:{port}",
        host=settings.host,
        port=port,
        deployment_id=record.id,
        deployment=record.ref,
        pipeline=record.pipeline_name,
        workers=settings.workers,
        log_file=log_file,
        version=__version__,
        host_id=settings.host_id,
    )
    metrics_dir = _metrics_dir(settings.workers)
    if settings.workers > 1 and not settings.broker_url:
        settings = settings.replace(broker_url=deployment_broker(settings.home, record.id))
    registry.register(settings.home, entry)
    try:
        return _run_uvicorn(settings, record, plan, sock, entry)
    finally:
        registry.unregister(settings.home, entry.id)
        sock.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def deployment_broker(home: str, deployment_id: str) -> str:
    """The broker of a deployment's workers: one SQLite file per home and deployment, made if
    missing. It outlives the server: the next server of the deployment adopts it, so jobs
    finished before a crash or restart stay readable for their retention time, and jobs a dead
    server left unfinished end ``failed`` (``worker_lost``) once their lease runs out. The URL
    names the file's identity: a worker that finds another file there refuses to use it."""
    path = broker_file(home, deployment_id)
    private_dir(home)
    private_dir(path.parent)
    st = private_file(path).stat()
    return f"sqlite://{path}?file={st.st_dev}:{st.st_ino}"


def _metrics_dir(workers: int) -> str | None:
    """Shared metrics for several workers: a fresh directory, named in the environment that the
    workers inherit, set before any of them imports prometheus_client. One worker keeps its
    metrics in memory (and never uses a directory the caller's environment happens to name)."""
    if workers == 1:
        os.environ.pop(MULTIPROC_ENV, None)
        return None
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    _remove_dead_metrics_dirs(Path(base))
    path = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-", dir=base)
    os.environ[MULTIPROC_ENV] = path
    return path


def _remove_dead_metrics_dirs(base: Path) -> None:
    """The metrics folders of this user's servers that died without removing theirs (a
    SIGKILL): a folder is named after its server's pid, and a pid no process has is dead."""
    import psutil

    for folder in base.glob(f"{METRICS_PREFIX}*"):
        pid = folder.name[len(METRICS_PREFIX) :].partition("-")[0]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings of every zserve server (``zserve dev``'s too)."""
    from zserve.server.logs import log_config
    from zserve.server.protocol import GuardedHttpTools

    return {
        "log_level": settings.log_level,
        "log_config": log_config(settings.log_level, settings.log_format),
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": settings.grace_s,
        "server_header": False,
        "ws_max_size": settings.max_body_bytes,
        "http": GuardedHttpTools,  # header limits, slow-head timeout, connection cap
    }


def _run_uvicorn(
    settings: Settings,
    record: DeploymentRecord,
    plan: Plan,
    sock: socket.socket,
    entry: registry.ServerEntry,
) -> int:
    import uvicorn

    from zserve.server.app import create_app

    common = uvicorn_options(settings)
    print(
        f"zserve: serving deployment {record.ref} ({record.id}) at {entry.url} with "
        f"{settings.workers} worker(s), server {entry.id}, pid {entry.pid}",
        file=sys.stderr,
        flush=True,
    )
    if settings.workers == 1:
        failed: list[ResourceFailed] = []

        def on_fatal(err: ResourceFailed) -> None:
            """A resource failed to build: say why, and stop (exit 3)."""
            print(f"Error: {err}", file=sys.stderr, flush=True)
            failed.append(err)
            server.should_exit = True

        config = uvicorn.Config(create_app(settings, record, plan, on_fatal=on_fatal), **common)
        server = uvicorn.Server(config)
        # uvicorn re-raises the signal that stopped it once it has drained; a drained stop is
        # a clean exit (code 0), so let that second delivery land on a handler that ignores it.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: None)
        server.run(sockets=[sock])
        return 0 if server.started and not failed else 3
    os.environ[SETTINGS_ENV] = settings.to_json()
    os.environ[DEPLOYMENT_ENV] = record.to_json()
    os.environ[SUPERVISOR_ENV] = str(os.getpid())
    os.environ[registry.SERVER_ID_ENV] = entry.id  # how `zserve ps` finds leftover workers
    from uvicorn.supervisors import Multiprocess  # its reloaders too: not for one worker

    config = uvicorn.Config(
        "zserve.server.boot:app_from_env", factory=True, workers=settings.workers, **common
    )
    marker = failed_marker(settings.home, entry.id)
    marker.unlink(missing_ok=True)
    Multiprocess(config, sockets=[sock]).run()
    if marker.exists():  # a worker stopped the server: it said why on stderr
        marker.unlink(missing_ok=True)
        return 3
    return 0


def failed_marker(home: str, server_id: str) -> Path:
    """The file a worker writes before it stops the whole server for good (a resource that
    fails to build, changed code): the supervisor then exits 3 rather than 0."""
    return registry.servers_dir(home) / f"{server_id}.failed"


def stop_server(settings: Settings, message: str) -> None:
    """In a worker of several: say why on stderr, mark the server failed and stop it (the
    supervisor stops every worker; restarting this one would fail again, forever)."""
    print(f"Error: {message}; stopping the server", file=sys.stderr, flush=True)
    server_id = os.environ.get(registry.SERVER_ID_ENV)
    if server_id:
        with contextlib.suppress(OSError):
            failed_marker(settings.home, server_id).write_text(message + "\n")
    os.kill(int(os.environ.get(SUPERVISOR_ENV) or os.getppid()), signal.SIGTERM)


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: everything comes from the environment."""
    from zserve.engine.deployments import check_sources, load_plan
    from zserve.server.app import create_app

    die_with_supervisor(int(os.environ.get(SUPERVISOR_ENV, "0")))
    settings = Settings.from_json(os.environ[SETTINGS_ENV])
    record = DeploymentRecord.from_json(os.environ[DEPLOYMENT_ENV])
    try:
        check_sources(record)
    except SourceChanged as err:
        # A worker restarted by uvicorn's supervisor after the code changed on disk: serving
        # the new code beside the old would mix versions, and failing here would restart it
        # forever. Stop the whole server instead, saying why.
        stop_server(settings, str(err))
        raise SystemExit(3) from None
    # a resource that fails to build fails in every worker: stop the server, not restart it
    return create_app(settings, record, load_plan(record),
                      on_fatal=lambda err: stop_server(settings, str(err)))  # fmt: skip


def die_with_supervisor(supervisor: int) -> None:
    """Make this worker get SIGTERM (and drain, then stop) when its supervisor dies, even by
    SIGKILL: Linux's parent-death signal. A supervisor already gone stops it at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            logger.warning("Cannot ask for a parent-death signal: errno %d", ctypes.get_errno())
    if supervisor and os.getppid() != supervisor:  # it died before the line above
        print("zserve: the server process is gone; this worker stops", file=sys.stderr)
        raise SystemExit(3)


def handover(settings: Settings, record: DeploymentRecord) -> bytes:
    """What `zserve start --detach` writes to the stdin of a server it spawned ``HANDED_ENV``."""
    return json.dumps({"settings": settings.to_json(), "deployment": record.to_json()}).encode()


def _handed() -> tuple[Settings, DeploymentRecord]:
    """Import what serving takes while `zserve start` reads the store, then read what it hands
    over: the settings and the deployment as it is served (its snapshot extracted)."""
    import uvicorn  # noqa: F401

    import zserve.server.app  # noqa: F401
    from zserve.engine import deployments  # noqa: F401

    doc = json.loads(sys.stdin.buffer.read() or b"null")
    if not isinstance(doc, dict):
        raise UsageError("`zserve start` stopped before it handed over the deployment to serve")
    return Settings.from_json(doc["settings"]), DeploymentRecord.from_json(doc["deployment"])


def main() -> None:
    """``python -m zserve.server.app``: serve the deployment named by the environment."""
    try:
        record = None
        if os.environ.pop(HANDED_ENV, None):
            settings, record = _handed()
        elif SETTINGS_ENV in os.environ:  # as `zserve bench --start` hands them over
            settings = Settings.from_json(os.environ[SETTINGS_ENV])
        else:
            settings = Settings.from_env()
        code = serve(
            settings,
            record,
            server_id=os.environ.get(registry.SERVER_ID_ENV),
            log_file=os.environ.get(registry.LOG_FILE_ENV),
        )
    except ZServeError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    sys.exit(code)
