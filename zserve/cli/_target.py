"""Which server a client command talks to, and which server knows a job.

``--url`` / ``--server`` / ``--deployment`` (one of them) > ``ZSERVE_URL`` > the only running
server. A job id names one server's job: with none of those and several servers running, the
job commands ask each running server until one knows the job."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from zserve.errors import NotFound, ServerUnreachable, Unauthorized, UsageError, ZServeError
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
    "resolve_url",
]

T = TypeVar("T")

URL_OPTION = typer.Option(None, "--url", help="The server's URL (default: ZSERVE_URL).")
SERVER_OPTION = typer.Option(None, "--server", "-s", help="A running server: id, port or name.")
DEPLOYMENT_OPTION = typer.Option(
    None, "--deployment", "-d", help="The running server of this deployment."
)


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


def on_job_server(
    job_id: str,
    url: str | None,
    server: str | None,
    deployment: str | None,
    call: Callable[[Client], T],
) -> tuple[str, T]:
    """``call`` on the server that knows ``job_id``: (its URL, what ``call`` returned)."""
    targets = job_servers(url, server, deployment)
    if len(targets) == 1:
        with open_client(targets[0]) as client:
            return targets[0], call(client)
    not_found: NotFound | None = None
    other: ZServeError | None = None
    for target in targets:
        with open_client(target) as client:
            try:
                return target, call(client)
            except NotFound as err:
                not_found = err
            except (ServerUnreachable, Unauthorized) as err:
                other = other or err
    if other is not None:
        raise other
    message = (
        f"No running server knows job {job_id!r} (asked {len(targets)}: {', '.join(targets)}); "
        "finished jobs are kept for a limited time"
    )
    if not_found is not None and not_found.problem_doc is not None:
        raise NotFound.from_problem(not_found.problem_doc, detail=message, status_code=404)
    raise NotFound(message)


def locate_job(
    job_id: str, url: str | None, server: str | None, deployment: str | None
) -> tuple[str, dict[str, Any]]:
    """(the URL of the server that knows ``job_id``, the job's document)."""
    return on_job_server(job_id, url, server, deployment, lambda c: c.job(job_id))
