"""What ``zserve bench`` shows and whom it talks to: the server under test (given, or started
for the run and stopped after), the live progress bar, the report drawn with rich, and the HTML
report (plotly, the ``report`` extra)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zserve.cli._params import parse_params
from zserve.cli._target import resolve_url
from zserve.errors import UsageError, ZServeError
from zserve.settings import Settings

if TYPE_CHECKING:
    from zserve.bench import LoadSpec, Tally
    from zserve.client import Client
    from zserve.registry import ServerEntry

__all__ = ["Target", "check_html", "progress", "refused", "show", "write_html"]

#: How long a server started by bench may take to answer /health, and to drain when stopped.
START_TIMEOUT_S, STOP_TIMEOUT_S = 120.0, 30.0


class Target:
    """The server under test, for one block: given (``--url``...), or started (``--start``)."""

    def __init__(
        self,
        start: str | None,
        workers: int | None,
        url: str | None,
        server: str | None,
        deployment: str | None,
    ) -> None:
        self.start, self.workers = start, workers
        self.given = (url, server, deployment)
        self.url = ""
        self.entry: ServerEntry | None = None
        self.startup_s: float | None = None
        self.status: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self._client: Client | None = None

    def __enter__(self) -> Target:
        from zserve.client import Client

        settings = Settings.from_env()
        if self.start:
            self.url = self._launch(settings)
        else:
            self.url = resolve_url(*self.given)
        self._client = Client(self.url, auth_key=settings.auth_key, timeout=30)
        try:
            self.info = self._client.info()
            self.status = self._client.status()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from zserve import registry

        if self._client is not None:
            self._client.close()
        if self.entry is not None:
            registry.stop_tree(self.entry.pid, STOP_TIMEOUT_S)
            registry.unregister(Settings.from_env().home, self.entry.id)
            self.entry = None

    def _launch(self, settings: Settings) -> str:
        from zserve.cli.start import launch
        from zserve.store import Store

        assert self.start is not None
        with Store(settings.store_url, migrate=settings.store_migrate) as store:
            record = store.get_deployment(self.start)
        wanted = settings.replace(deployment_id=record.id, port=0, workers=self.workers or 1)
        began = time.perf_counter()
        self.entry, _ = launch(wanted, START_TIMEOUT_S)
        self.startup_s = round(time.perf_counter() - began, 3)
        return self.entry.url

    def parameters(self, pairs: list[str] | None, params_json: str | None) -> dict[str, Any]:
        return parse_params(pairs, params_json, self.info.get("parameters") if pairs else None)

    def probe(self, body: dict[str, Any]) -> None:
        """One request before the load: one the server refuses (422...) stops bench here."""
        from zserve.client import error_from_response

        assert self._client is not None
        answer = self._client.request("POST", "/invoke", json=body)
        if answer.status_code >= 400 and answer.status_code not in (429, 500, 503, 504):
            raise error_from_response(answer)

    def server_info(self) -> dict[str, Any]:
        deployment = self.info.get("deployment", {})
        return {
            "workers": self.status.get("workers"), "capture_default":
            self.status.get("capture_default"), "version": self.status.get("version"),
            "pipeline": self.info.get("pipeline"), "deployment_id": deployment.get("id"),
            "deployment": f"{deployment.get('name')}:{deployment.get('version')}",
            "started_by_bench": self.start is not None, "startup_s": self.startup_s,
        }  # fmt: skip


def refused(status: int, body: str) -> ZServeError:
    """The error of an answer that means the request is wrong (the load stopped at it)."""
    import json

    import httpx

    from zserve.client import error_from_response

    try:
        json.loads(body)
    except ValueError:
        return UsageError(f"The server refused the request ({status}): {body[:200]}")
    return error_from_response(
        httpx.Response(status, content=body.encode(), headers={"content-type": "application/json"})
    )


@contextlib.contextmanager
def progress(spec: LoadSpec, enabled: bool) -> Iterator[Callable[[Tally | int], None] | None]:
    """A live bar on the terminal (stderr): done, requests/s, p50, errors."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("bench"), BarColumn(), TextColumn("{task.description}"),
                   TimeElapsedColumn(), transient=True)  # fmt: skip
    total = spec.requests if spec.requests else (spec.duration_s or 0) * 10
    task = bar.add_task("", total=total)
    began = time.perf_counter()

    def tick(seen: Tally | int) -> None:
        elapsed = time.perf_counter() - began
        done = seen if isinstance(seen, int) else seen.done
        text = f"{done} done, {done / max(elapsed, 1e-9):,.0f} req/s"
        if not isinstance(seen, int):
            p50 = seen.latency.percentile_ms(50) if seen.latency.count else 0.0
            text += f", p50 {p50:.2f} ms, {sum(seen.errors.values())} errors"
        completed = done if spec.requests else elapsed * 10
        bar.update(task, completed=completed, description=text)

    with bar:
        yield tick


def show(docs: list[dict[str, Any]], comparison: list[dict[str, Any]] | None) -> None:
    from rich.console import Console

    from zserve.cli import _bench_tables as tables

    console = Console(width=None if sys.stdout.isatty() else 160)
    if len(docs) > 1:
        tables.sweep(console, docs)
    else:
        tables.single(console, docs[0])
    if comparison:
        tables.comparison(console, comparison)
    for doc in docs:
        for line in tables.warnings(doc):
            console.print(f"Warning: {line}", style="yellow", highlight=False)


def check_html() -> None:
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise UsageError(
            "--html draws its charts with plotly: pip install 'zserve[report]'"
        ) from None


def write_html(path: Path, docs: list[dict[str, Any]]) -> None:
    from zserve.cli._bench_html import page

    try:
        path.write_text(page(docs))
    except OSError as exc:
        raise UsageError(f"Cannot write {path}: {exc.strerror}") from None
