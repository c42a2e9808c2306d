"""The dashboard at ``/ui``: a single page (``ui/index.html``) and its static files, shipped in
the package; no build step, no request to the internet. The page is a client of the same HTTP
API as everyone else (``/info``, ``/status``, ``/metrics``, ``/jobs``, ``/stream/{id}``,
``/runs``, ``/invoke``); it adds no route that reads or changes anything.

``/ui`` and ``/ui/static/*`` answer without the auth key (``middleware.OPEN_PREFIXES``): the page
asks for the key itself, keeps it in the tab's session storage and sends it on every call; its
streams use per-job stream tokens. A strict Content-Security-Policy keeps the page to its own
scripts (no inline script, no eval), so values it shows cannot run as code.
``ZSERVE_UI=0`` / ``--no-ui`` leaves all of it out."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["CSP", "UI_DIR", "dashboard_routes"]

UI_DIR = Path(__file__).with_name("ui")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def dashboard_routes() -> list[Route | Mount]:
    """``GET /ui`` (and ``/ui/``): the page; ``/ui/static/...``: its files."""
    page = (UI_DIR / "index.html").read_bytes()

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    return [
        Route("/ui", index, methods=["GET", "HEAD"], include_in_schema=False),
        Route("/ui/", index, methods=["GET", "HEAD"], include_in_schema=False),
        Mount("/ui/static", StaticFiles(directory=UI_DIR), name="ui-static"),
    ]
