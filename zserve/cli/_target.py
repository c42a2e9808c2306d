"""Which server a client command talks to (design §10, "Finding the server")."""

from __future__ import annotations

import typer

from zserve.errors import UsageError
from zserve.settings import Settings

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
