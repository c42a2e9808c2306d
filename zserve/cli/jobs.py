"""``zserve jobs list|show|cancel``: the background jobs of a server.

A job id names one server's job: with no ``--url``/``--server``/``--deployment`` and no
``ZSERVE_URL``, and several servers running, ``show``, ``cancel`` (and ``zserve stream``) ask each
running server until one knows the job (design §10, "Finding the server")."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from zserve.cli._output import fail, print_document
from zserve.cli._target import DEPLOYMENT_OPTION, SERVER_OPTION, URL_OPTION, resolve_url
from zserve.cli.stream import format_ms
from zserve.errors import NotFound, ServerUnreachable, Unauthorized, ZServeError
from zserve.settings import Settings

if TYPE_CHECKING:
    from zserve.client import Client

__all__ = ["app", "job_servers", "locate_job", "on_job_server", "open_client"]

T = TypeVar("T")

app = typer.Typer(help="List, show and cancel background jobs.", no_args_is_help=True)

JOB_ID_HELP = "The job's id (as `zserve invoke --async` prints it)."
JSON_HELP = "Print the server's JSON answer as it is."


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


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
    missing = NotFound(
        f"No running server knows job {job_id!r} (asked {len(targets)}: {', '.join(targets)}); "
        "finished jobs are kept for a limited time"
    )
    missing.problem_doc = getattr(not_found, "problem_doc", None)  # type: ignore[attr-defined]
    raise missing


def locate_job(
    job_id: str, url: str | None, server: str | None, deployment: str | None
) -> tuple[str, dict[str, Any]]:
    """(the URL of the server that knows ``job_id``, the job's document)."""
    return on_job_server(job_id, url, server, deployment, lambda c: c.job(job_id))


def _json_failure(err: ZServeError) -> typer.Exit:
    """``--json`` and an error: the server's problem document (if any) on stdout, then the
    ``Error:`` line and the exit code."""
    doc = getattr(err, "problem_doc", None)
    if doc:
        print_document(doc)
    return fail(err)


@app.command("list")
def list_(
    status: JobStatus | None = typer.Option(None, "--status", help="Only jobs in this state."),
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="At most this many jobs."),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List a server's jobs, newest first."""
    target = resolve_url(url, server, deployment)
    with open_client(target) as client:
        try:
            doc = client.jobs(status.value if status else None, limit)
        except ZServeError as err:
            raise (_json_failure(err) if json_ else fail(err)) from None
    if json_:
        print_document(doc)
        return
    jobs = doc.get("jobs") or []
    if not jobs:
        which = f" {status.value}" if status else ""
        typer.echo(f"No{which} jobs on {target}. Submit one with `zserve invoke --async`.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("ID", "STATUS", "MODE", "CREATED", "DURATION", "STEPS"):
        table.add_column(col, no_wrap=True)
    for job in jobs:
        steps = job.get("steps") or []
        done = sum(1 for s in steps if s.get("status") == "completed")
        table.add_row(
            str(job.get("job_id")), str(job.get("status")), str(job.get("mode", "")),
            _when(job.get("created_at")), _duration(job), f"{done}/{len(steps)}",
        )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 1000).print(table)


@app.command("show")
def show(
    job_id: str = typer.Argument(..., help=JOB_ID_HELP),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one job: its status, each step's status and duration, and its outputs or error."""
    try:
        target, job = locate_job(job_id, url, server, deployment)
    except ZServeError as err:
        raise (_json_failure(err) if json_ else fail(err)) from None
    if json_:
        print_document(job)
        return
    typer.echo(f"job {job.get('job_id')}  {job.get('status')}  ({job.get('mode', '?')}, {target})")
    typer.echo(f"  created:   {_when(job.get('created_at'))}")
    if job.get("started_at"):
        typer.echo(f"  started:   {_when(job.get('started_at'))}")
    if job.get("finished_at"):
        typer.echo(f"  finished:  {_when(job.get('finished_at'))}  (took {_duration(job)})")
    steps = job.get("steps") or []
    if steps:
        typer.echo("  steps:")
        width = max(len(str(s.get("name"))) for s in steps)
        for s in steps:
            took = "" if s.get("duration_ms") is None else format_ms(s["duration_ms"])
            line = f"    {s.get('name')!s:<{width}}  {s.get('status')!s:<9}  {took}"
            typer.echo(line.rstrip())
    error = job.get("error")
    if error:
        where = f" in step {error['step']}" if error.get("step") else ""
        typer.echo(f"  error:     {error.get('reason')}{where}: {error.get('message')}")
    if "outputs" in job:
        outputs = job["outputs"] or {}
        typer.echo("  outputs:" + ("" if outputs else "   (none)"))
        for name, value in outputs.items():
            typer.echo(f"    {name}: {value if isinstance(value, str) else _compact(value)}")


@app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., help=JOB_ID_HELP),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Cancel a queued or running job (a finished one is an error, exit 2)."""
    try:
        _, doc = on_job_server(job_id, url, server, deployment, lambda c: c.cancel(job_id))
    except ZServeError as err:
        raise (_json_failure(err) if json_ else fail(err)) from None
    if json_:
        print_document(doc)
        return
    status = doc.get("status")
    if status == "cancelled":
        typer.echo(f"Cancelled job {doc.get('job_id', job_id)}")
    else:
        typer.echo(f"Job {doc.get('job_id', job_id)} is {status}")


def _compact(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _parse(ts: Any) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def _when(ts: Any) -> str:
    return ts[:19].replace("T", " ") if isinstance(ts, str) else "-"


def _duration(job: dict[str, Any]) -> str:
    started, finished = _parse(job.get("started_at")), _parse(job.get("finished_at"))
    if started is None:
        return "-"
    end = finished.timestamp() if finished else time.time()
    return format_ms((end - started.timestamp()) * 1000)
