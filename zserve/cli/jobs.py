"""``zserve jobs list|show|cancel``: the background jobs of a server.

A job id names one server's job: with no ``--url``/``--server``/``--deployment`` and no
``ZSERVE_URL``, and several servers running, ``show``, ``cancel`` (and ``zserve stream``) ask each
running server until one knows the job (``zserve.cli._target``)."""

from __future__ import annotations

import sys

import typer

from zserve.cli._format import compact, format_ms, job_duration, when
from zserve.cli._output import fail, print_document
from zserve.cli._suggest import job_ids
from zserve.cli._target import (
    DEPLOYMENT_OPTION,
    SERVER_OPTION,
    URL_OPTION,
    locate_job,
    on_job_server,
    open_client,
    resolve_url,
)
from zserve.errors import ZServeError
from zserve.records import JobStatus, StepStatus

__all__ = ["app"]

app = typer.Typer(help="List, show and cancel background jobs.", no_args_is_help=True)

JOB_ID_HELP = "The job's id (as `zserve invoke --async` prints it) or a unique prefix."
JSON_HELP = "Print the server's JSON answer as it is."


def _json_failure(err: ZServeError) -> typer.Exit:
    """``--json`` and an error: the server's problem document (if any) on stdout, then the
    ``Error:`` line and the exit code."""
    if err.problem_doc:
        print_document(err.problem_doc)
    return fail(err)


@app.command("list")
def list_(
    status: JobStatus | None = typer.Option(None, "--status", help="Only jobs in this state."),
    limit: int = typer.Option(100, "--limit", "-n", min=1, max=500, help="At most this many jobs."),
    cursor: str | None = typer.Option(
        None, "--cursor", help="Continue a listing: the cursor its last line gave."
    ),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List a server's jobs, newest first."""
    target = resolve_url(url, server, deployment)
    with open_client(target) as client:
        try:
            doc = client.jobs(status.value if status else None, limit, cursor)
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
        done = sum(1 for s in steps if s.get("status") == StepStatus.COMPLETED)
        table.add_row(
            str(job.get("job_id"))[:8], str(job.get("status")), str(job.get("mode", "")),
            when(job.get("created_at")), job_duration(job), f"{done}/{len(steps)}",
        )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 1000).print(table)
    if doc.get("next"):
        again = f" --status {status.value}" if status else ""
        typer.echo(f"More: zserve jobs list{again} --limit {limit} --cursor {doc['next']}")


@app.command("show")
def show(
    job_id: str = typer.Argument(..., help=JOB_ID_HELP, autocompletion=job_ids),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one job: status, steps, outputs or error.

    Each step's status and duration; JOB_ID is the job's id or a unique prefix of it."""
    try:
        target, job = locate_job(job_id, url, server, deployment)
    except ZServeError as err:
        raise (_json_failure(err) if json_ else fail(err)) from None
    if json_:
        print_document(job)
        return
    typer.echo(f"job {job.get('job_id')}  {job.get('status')}  ({job.get('mode', '?')}, {target})")
    typer.echo(f"  created:   {when(job.get('created_at'))}")
    if job.get("started_at"):
        typer.echo(f"  started:   {when(job.get('started_at'))}")
    if job.get("finished_at"):
        typer.echo(f"  finished:  {when(job.get('finished_at'))}  (took {job_duration(job)})")
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
            typer.echo(f"    {name}: {value if isinstance(value, str) else compact(value)}")


@app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., help=JOB_ID_HELP, autocompletion=job_ids),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Cancel a queued or running job.

    A finished one is an error (exit 2)."""
    try:
        _, doc = on_job_server(job_id, url, server, deployment, lambda c, full: c.cancel(full))
    except ZServeError as err:
        raise (_json_failure(err) if json_ else fail(err)) from None
    if json_:
        print_document(doc)
        return
    status = doc.get("status")
    if status == JobStatus.CANCELLED:
        typer.echo(f"Cancelled job {doc.get('job_id', job_id)}")
    else:
        typer.echo(f"Job {doc.get('job_id', job_id)} is {status}")
