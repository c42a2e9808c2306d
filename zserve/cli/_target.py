"""Which server a client command talks to, and which server knows a job.

``--url`` / ``--server`` / ``--deployment`` (one of them) > ``ZSERVE_URL`` > the only running
server. A job id names one server's job: with none of those and several servers running, the
job commands ask each running server until one knows the job. A job may be named by a unique
prefix of its id (``GET /jobs?prefix=``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from zserve.cli._suggest import running_deployments, server_ids
from zserve.errors import (
    JobNotFound,
    NotFound,
    ServerUnreachable,
    Unauthorized,
    UsageError,
    ZServeError,
)
from zserve.settings import Settings

if TYPE_CHECKING:
    from zserve.client import Client

__all__ = [
    "DEPLOYMENT_OPTION",
    "SERVER_OPTION",
    "URL_OPTION",
    "job_servers",
    "locate_job",
    "on_job_server",
    "open_client",
    "resolve_job",
    "resolve_url",
]

T = TypeVar("T")

URL_OPTION = typer.Option(None, "--url", help="The server's URL (default: ZSERVE_URL).")
SERVER_OPTION = typer.Option(
    None,
    "--server",
    "-s",
    help="A running server: id, port or name.",
    autocompletion=server_ids,
)
DEPLOYMENT_OPTION = typer.Option(
    None,
    "--deployment",
    "-d",
    help="The running server of this deployment.",
    autocompletion=running_deployments,
)

#: A job id prefix must have at least this many characters (like a run id's).
MIN_JOB_PREFIX = 4
#: How many jobs an ambiguous prefix lists.
_SHOWN = 10
_JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_JOB_PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]{0,35}$")


def resolve_url(url: str | None, server: str | None, deployment: str | None) -> str:
    """``--url`` / ``--server`` / ``--deployment`` (one of them) > ``ZSERVE_URL`` > the only
    running server."""
    from zserve import registry

    given = [
        name
        for name, v in (("--url", url), ("--server", server), ("--deployment", deployment))
        if v
    ]
    if len(given) > 1:
        raise UsageError(f"Give only one of {', '.join(given)}")
    if url:
        return url
    settings = Settings.from_env()
    if server:
        return registry.find_server(settings.home, server).url
    if deployment:
        return registry.find_server(settings.home, deployment, deployment_only=True).url
    if settings.url:
        return settings.url
    return registry.find_server(settings.home, None).url


def open_client(url: str) -> Client:
    from zserve.client import Client

    return Client(url, auth_key=Settings.from_env().auth_key)


def job_servers(url: str | None, server: str | None, deployment: str | None) -> list[str]:
    """Where a job may live: the server the options or ``ZSERVE_URL`` name, else every running
    server (the only one, or all of them when several run)."""
    from zserve import registry

    settings = Settings.from_env()
    if url or server or deployment or settings.url:
        return [resolve_url(url, server, deployment)]
    entries = registry.list_servers(settings.home)
    if len(entries) <= 1:
        return [resolve_url(None, None, None)]  # the only one, or the "none running" error
    return [e.url for e in entries]


def check_job_ref(ref: str) -> str:
    """``ref`` as a job id or id prefix (lower case); a UsageError for what cannot be one."""
    wanted = ref.strip().lower()
    if _JOB_ID.match(wanted):
        return wanted
    if not _JOB_PREFIX.match(wanted):
        raise UsageError(
            f"{ref!r} is not a job id: job ids are UUIDs such as "
            "0b7c2f9e-5d1a-4c3e-9f8b-2a6d4e1c7b90 (or a unique prefix of one, "
            f"{MIN_JOB_PREFIX}+ characters); `zserve jobs list` shows them"
        )
    if len(wanted) < MIN_JOB_PREFIX:
        raise UsageError(
            f"Job id prefix {ref!r} is too short: give at least {MIN_JOB_PREFIX} characters"
        )
    return wanted


def resolve_job(client: Client, ref: str) -> str:
    """The full id of the one job of this server whose id is or starts with ``ref``; an id no
    job has is returned as it is (the server's 404 then says why it is unknown)."""
    wanted = check_job_ref(ref)
    if _JOB_ID.match(wanted):
        return wanted
    found = [str(j["job_id"]) for j in client.jobs(limit=_SHOWN + 1, prefix=wanted)["jobs"]]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        shown = ", ".join(found[:_SHOWN]) + (", ..." if len(found) > _SHOWN else "")
        raise UsageError(
            f"Job id prefix {ref!r} matches {'more than ' if len(found) > _SHOWN else ''}"
            f"{min(len(found), _SHOWN)} jobs: {shown}. Give more characters or the full id"
        )
    raise JobNotFound.unknown(ref, _retention(client))


def _retention(client: Client) -> float | None:
    """How long the server keeps finished jobs (its ``/status``), if it says."""
    try:
        ttl = client.status().get("jobs", {}).get("ttl_s")
    except ZServeError:
        return None
    return float(ttl) if isinstance(ttl, int | float) else None


def on_job_server(
    job_id: str,
    url: str | None,
    server: str | None,
    deployment: str | None,
    call: Callable[[Client, str], T],
) -> tuple[str, T]:
    """``call(client, full job id)`` on the server that knows ``job_id`` (an id or a unique
    prefix of one): (its URL, what ``call`` returned)."""
    check_job_ref(job_id)  # before asking any server
    targets = job_servers(url, server, deployment)
    if len(targets) == 1:
        with open_client(targets[0]) as client:
            return targets[0], call(client, resolve_job(client, job_id))
    not_found: NotFound | None = None
    other: ZServeError | None = None
    for target in targets:
        with open_client(target) as client:
            try:
                return target, call(client, resolve_job(client, job_id))
            except NotFound as err:
                not_found = err
            except (ServerUnreachable, Unauthorized) as err:
                other = other or err
    if other is not None:
        raise other
    message = (
        f"No running server knows job {job_id!r} (asked {len(targets)}: {', '.join(targets)}): "
        "it never existed, or it finished and was forgotten (each server keeps finished jobs "
        "for its ZSERVE_JOB_TTL_S)"
    )
    if not_found is not None and not_found.problem_doc is not None:
        raise NotFound.from_problem(not_found.problem_doc, detail=message, status_code=404)
    raise NotFound(message)


def locate_job(
    job_id: str, url: str | None, server: str | None, deployment: str | None
) -> tuple[str, dict[str, Any]]:
    """(the URL of the server that knows ``job_id``, the job's document)."""
    return on_job_server(job_id, url, server, deployment, lambda c, full: c.job(full))
