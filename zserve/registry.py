"""The registry of running servers: one JSON file per server in ``$ZSERVE_HOME/servers/``.

A server records itself when it starts listening and removes its entry when it stops. An entry
whose process is gone, or whose pid now belongs to another process (psutil's create time tells),
is stale and removed whenever the registry is read, unless workers of that server outlived it
(its supervisor was killed while they drained): then ``ps`` lists them as leftovers and ``stop``
stops them, and the entry goes with the last of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from zserve.errors import NotFound, ServerUnreachable, UsageError
from zserve.paths import private_dir

__all__ = [
    "ServerEntry",
    "find_server",
    "list_servers",
    "live_server_ids",
    "new_server_id",
    "reap",
    "register",
    "stop_processes",
    "stop_tree",
    "term_processes",
    "term_tree",
    "unregister",
]

#: Set by `zserve start --detach` for the server process it spawns.
SERVER_ID_ENV = "ZSERVE_SERVER_ID"
LOG_FILE_ENV = "ZSERVE_LOG_FILE"
#: The supervisor's pid, in its workers' environment: they stop when it is gone.
SUPERVISOR_ENV = "ZSERVE_SUPERVISOR_PID"

#: Worker processes spawned by uvicorn's supervisor run multiprocessing's spawn_main.
_WORKER_MARK = "spawn_main"
#: How often a stop looks whether the processes it signalled are gone (seconds).
STOP_POLL_S = 0.02
#: How long to wait for SIGKILLed processes to go (seconds).
KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class ServerEntry:
    id: str
    pid: int
    #: psutil create_time of ``pid``: tells our server from a process that reused its pid.
    create_time: float
    url: str
    host: str
    port: int
    deployment_id: str
    deployment: str  # name:version
    pipeline: str
    workers: int
    log_file: str | None
    started_at: float
    version: str
    #: ZSERVE_HOST_ID, or hostname:port (entries written before it have "")
    host_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def is_alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.create_time) < 0.5 and proc.is_running()
            return bool(same and proc.status() != psutil.STATUS_ZOMBIE)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def worker_processes(self) -> list[psutil.Process]:
        """The processes answering requests: the workers, or the server itself for one; for a
        dead server, its leftover workers."""
        if not self.is_alive():
            return self.leftover_workers()
        try:
            proc = self.process()
            if self.workers == 1:
                return [proc]
            return [c for c in proc.children() if _WORKER_MARK in " ".join(_cmdline(c))]
        except psutil.NoSuchProcess:
            return []

    def leftover_workers(self) -> list[psutil.Process]:
        """Workers that outlived this server's (dead) supervisor: found by the server id in
        their environment, among processes started after it."""
        if self.workers == 1 or self.is_alive():
            return []
        found = []
        for proc in psutil.process_iter(["create_time", "cmdline"]):
            try:
                if proc.info["create_time"] < self.create_time - 0.5:
                    continue
                if _WORKER_MARK not in " ".join(proc.info["cmdline"] or ()):
                    continue
                if proc.environ().get(SERVER_ID_ENV) == self.id:
                    found.append(proc)
            except psutil.Error:
                continue
        return found


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return list(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def servers_dir(home: str) -> Path:
    return Path(home) / "servers"


def new_server_id() -> str:
    return secrets.token_hex(4)


def register(home: str, entry: ServerEntry) -> Path:
    """Write the entry atomically (a reader never sees half a file)."""
    private_dir(home)
    folder = private_dir(servers_dir(home))
    path = folder / f"{entry.id}.json"
    tmp = folder / f".{entry.id}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(entry.to_dict(), indent=2))
    tmp.replace(path)
    return path


def unregister(home: str, server_id: str) -> None:
    (servers_dir(home) / f"{server_id}.json").unlink(missing_ok=True)


def this_process_entry(**fields: Any) -> ServerEntry:
    """An entry for the calling process (pid and create time filled in)."""
    proc = psutil.Process()
    return ServerEntry(
        pid=proc.pid, create_time=proc.create_time(), started_at=time.time(), **fields
    )


def list_servers(home: str, *, leftovers: bool = False) -> list[ServerEntry]:
    """Running servers, oldest first, and with ``leftovers`` dead ones whose workers live on.
    Stale entries are removed on the way."""
    folder = servers_dir(home)
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.glob("*.json")):
        try:
            entry = ServerEntry(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: not ours to keep
            continue
        if entry.is_alive():
            entries.append(entry)
        elif entry.leftover_workers():
            if leftovers:
                entries.append(entry)
        else:
            path.unlink(missing_ok=True)
    return sorted(entries, key=lambda e: e.started_at)


def live_server_ids(home: str) -> set[str]:
    """The ids of the servers that run (or whose workers do), and of the servers that
    `zserve start --detach` is starting: not yet in the registry, found by their command line
    and the server id in their environment."""
    ids = {entry.id for entry in list_servers(home, leftovers=True)}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "zserve.server.app" in (proc.info["cmdline"] or ()):
                ids.add(proc.environ().get(SERVER_ID_ENV, ""))
        except psutil.Error:
            continue
    ids.discard("")
    return ids


def describe(entries: list[ServerEntry]) -> str:
    return "; ".join(f"{e.id} ({e.deployment} at {e.url})" for e in entries)


def find_server(
    home: str, ref: str | None, *, deployment_only: bool = False, leftovers: bool = False
) -> ServerEntry:
    """A running server by id, port, deployment (name, name:version or id), or id prefix (4+
    characters), in that order; with no ref, the only running server. ``deployment_only``
    matches deployments alone; ``leftovers`` includes dead servers whose workers live on."""
    servers = list_servers(home, leftovers=leftovers)
    if ref is None:
        if len(servers) == 1:
            return servers[0]
        if not servers:
            raise ServerUnreachable(  # exit 3, like a --url nothing answers at
                "No zserve server is running: start one with "
                "`zserve start --deployment NAME --detach`"
            )
        raise UsageError(
            f"{len(servers)} servers are running; name one (id, port or deployment): "
            + describe(servers)
        )
    by_deployment = [
        s for s in servers if ref in (s.deployment, s.deployment.split(":")[0], s.deployment_id)
    ]
    if deployment_only:
        matches = by_deployment
    else:
        matches = [s for s in servers if s.id == ref]
        if not matches and ref.isdigit():
            matches = [s for s in servers if s.port == int(ref)]
        if not matches:
            matches = by_deployment
        if not matches and len(ref) >= 4:
            matches = [s for s in servers if s.id.startswith(ref)]
    if len(matches) > 1:  # a live server before the leftovers of a dead one on its port
        matches = [s for s in matches if s.is_alive()] or matches
    if len(matches) == 1:
        return matches[0]
    if not matches:
        running = describe(servers) if servers else "none"
        raise NotFound(f"No running server matches {ref!r}; running: {running}")
    raise UsageError(f"{ref!r} matches {len(matches)} servers; name one by id: {describe(matches)}")


def stop_tree(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid``, give it and its descendants ``timeout`` seconds to exit, then SIGKILL
    whatever is left. True when everything exited by itself."""
    return reap([term_tree(pid, signal_it=timeout > 0)], timeout)[0]


def stop_processes(procs: list[psutil.Process], timeout: float) -> bool:
    """SIGTERM each of ``procs``, give them ``timeout`` seconds, then SIGKILL what is left."""
    return reap([term_processes(procs) if timeout > 0 else procs], timeout)[0]


def term_tree(pid: int, *, signal_it: bool = True) -> list[psutil.Process]:
    """SIGTERM ``pid`` (unless not ``signal_it``): it and its descendants, to wait for."""
    try:
        main = psutil.Process(pid)
        tree = [main, *main.children(recursive=True)]
        if signal_it:
            main.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return []
    return tree


def term_processes(procs: list[psutil.Process]) -> list[psutil.Process]:
    """SIGTERM each of ``procs``: them, to wait for."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    return procs


def reap(groups: list[list[psutil.Process]], timeout: float) -> list[bool]:
    """Wait until every process of ``groups`` is gone, for ``timeout`` seconds at most (all
    groups at once, looking every ``STOP_POLL_S``), then SIGKILL what is left. For each group:
    True when all of it exited by itself."""
    deadline = time.monotonic() + timeout
    alive = [list(group) for group in groups]
    while any(alive) and time.monotonic() < deadline:
        time.sleep(STOP_POLL_S)
        alive = [[p for p in group if not _gone(p)] for group in alive]
    for proc in (p for group in alive for p in group):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    left = [p for group in alive for p in group]
    deadline = time.monotonic() + KILL_WAIT_S
    while left and time.monotonic() < deadline:
        time.sleep(STOP_POLL_S)
        left = [p for p in left if not _gone(p)]
    return [not group for group in alive]


def _gone(proc: psutil.Process) -> bool:
    """Exited. A zombie counts: it runs nothing, and waits only for its parent (or, for a
    detached server, init) to reap it, which may take a second or more. One of ours is reaped
    here."""
    try:
        if not proc.is_running():
            return True
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)
    return True
