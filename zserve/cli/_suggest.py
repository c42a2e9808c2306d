"""What TAB offers for names and ids: deployment names, server ids, job ids (Typer
``autocompletion=`` callbacks, ``zserve.cli._completion`` explains the protocol).

They run at every TAB, so they are fast and load nothing heavy (no httpx, SQLAlchemy or server
code: the registry's files, the embedded store read with ``sqlite3`` read-only, a job listing
read with ``urllib`` and a short timeout); and they never raise: whatever goes wrong (no server,
no store, a PostgreSQL store, a server that does not answer in time) means no suggestions.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, cast

__all__ = ["deployment_names", "job_ids", "running_deployments", "server_ids"]

#: How long a job listing may take before TAB gives up on that server (seconds).
JOB_TIMEOUT_S = 0.5
#: How many suggestions at most.
MOST = 50

Suggestions = list[tuple[str, str]]


def _never_raise(
    fn: Callable[[Any, str], Suggestions],
) -> Callable[[Any, list[str], str], Suggestions]:
    def complete(ctx: Any, args: list[str], incomplete: str) -> Suggestions:
        try:
            return [s for s in fn(ctx, incomplete) if s[0].startswith(incomplete)][:MOST]
        except Exception:
            return []

    complete.__name__ = fn.__name__
    complete.__doc__ = fn.__doc__
    return complete


def _settings() -> Any:
    from zserve.settings import Settings

    return Settings.from_env()


def _servers() -> list[Any]:
    from zserve import registry

    return registry.list_servers(_settings().home)


@_never_raise
def server_ids(ctx: Any, incomplete: str) -> Suggestions:
    """Running servers: their ids, with what they serve."""
    return [(s.id, f"{s.deployment} at {s.url}") for s in _servers()]


@_never_raise
def running_deployments(ctx: Any, incomplete: str) -> Suggestions:
    """Deployments a running server serves (what ``--deployment`` of client commands takes)."""
    seen: dict[str, str] = {}
    for s in _servers():
        seen.setdefault(s.deployment.split(":")[0], f"{s.deployment} at {s.url}")
    return sorted(seen.items())


@_never_raise
def deployment_names(ctx: Any, incomplete: str) -> Suggestions:
    """Stored deployments: names (their latest version) and name:version, from the embedded
    SQLite store (a PostgreSQL store offers nothing: that would need its driver at each TAB)."""
    url = _settings().store_url
    if not url.startswith("sqlite:///"):
        return []
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    uri = "file:" + urllib.parse.quote("/" + path.lstrip("/")) + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=0.2)) as db:
        rows = db.execute(
            "SELECT name, version FROM deployments ORDER BY name, version DESC"
        ).fetchall()
    found: dict[str, str] = {}
    for name, version in rows:
        found.setdefault(name, f"latest: version {version}")
        if ":" in incomplete:  # versions only once the name is typed
            found.setdefault(f"{name}:{version}", f"version {version}")
    return list(found.items())


@_never_raise
def job_ids(ctx: Any, incomplete: str) -> Suggestions:
    """Job ids of the server the command names (``--url``/``--server``/``--deployment``,
    ``ZSERVE_URL``), else of every running server, newest first."""
    found: Suggestions = []
    for url in _job_urls(ctx.params if ctx is not None else {}):
        found += _jobs(url, incomplete.lower())
    return found


def _job_urls(params: dict[str, Any]) -> Iterator[str]:
    if params.get("url"):
        yield str(params["url"])
        return
    settings = _settings()
    servers = _servers()
    if params.get("server"):
        ref = str(params["server"])
        yield from (s.url for s in servers if ref in (s.id, str(s.port)) or s.id.startswith(ref))
        return
    if params.get("deployment"):
        ref = str(params["deployment"])
        yield from (s.url for s in servers if ref in (s.deployment, s.deployment.split(":")[0]))
        return
    if settings.url:
        yield settings.url
        return
    yield from (s.url for s in servers)


def _jobs(url: str, prefix: str) -> Suggestions:
    query = {"limit": str(MOST)} | ({"prefix": prefix} if prefix else {})
    request = urllib.request.Request(f"{url.rstrip('/')}/jobs?{urllib.parse.urlencode(query)}")
    key = _settings().auth_key
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=JOB_TIMEOUT_S) as response:
            jobs = json.load(response).get("jobs") or []
    except (OSError, ValueError):
        return []
    return [(str(j["job_id"]), f"{j.get('status')} {j.get('mode')}") for j in jobs]


#: Parameters of commands whose modules other changes are editing: given their callbacks here
#: (command path, parameter name) rather than in each module's ``typer.Option``/``Argument``.
ATTACHED: dict[tuple[str, str], Callable[[Any, list[str], str], Suggestions]] = {
    ("start", "deployment"): deployment_names,
    ("run", "target"): deployment_names,
    ("deployments list", "name"): deployment_names,
    ("deployments show", "ref"): deployment_names,
    ("deployments delete", "ref"): deployment_names,
    ("export k8s", "deployment"): deployment_names,
    ("export docker", "deployment"): deployment_names,
    ("logs", "server"): server_ids,
    ("stop", "server"): server_ids,
}


def attach(command: Any, path: str = "") -> None:
    """Give the parameters ``ATTACHED`` names their callbacks (``command``: the root group)."""
    try:
        from typer.core import _typer_param_setup_autocompletion_compat
    except ImportError:  # a Typer without it: those parameters complete file names, as before
        return
    for param in command.params:
        callback = ATTACHED.get((path, param.name))
        if callback is not None and getattr(param, "_custom_shell_complete", None) is None:
            _typer_param_setup_autocompletion_compat(param, autocompletion=cast(Any, callback))
    for name, sub in getattr(command, "commands", {}).items():
        attach(sub, f"{path} {name}".strip())
