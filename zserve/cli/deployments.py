"""``zserve deployments list|show|diff|delete``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from zserve.cli._format import when
from zserve.cli._output import print_json
from zserve.settings import Settings

if TYPE_CHECKING:
    from zserve.records import DeploymentRecord
    from zserve.store import Store

app = typer.Typer(help="List, show, compare and delete stored deployments.", no_args_is_help=True)

REF_HELP = "A deployment: its id, a unique id prefix (8+ characters), a name, or name:version."


@app.command("list")
def list_(
    name: str | None = typer.Option(None, "--name", help="Only versions of this name."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List deployments, newest first.

    Each row says whether the working copy has drifted from the deployed snapshot."""
    from zserve.store import Store

    settings = Settings.from_env()
    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        records = store.list_deployments(name)
        drift = {r.id: _drift(store, r) for r in records}
    if json_:
        print_json({
            "deployments": [
                {**r.to_dict(), "drifted": bool(drift[r.id]), "drifted_files": drift[r.id]}
                for r in records
            ]
        })  # fmt: skip
        return
    if not records:
        typer.echo("No deployments yet: create one with `zserve deploy module:pipeline`.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("ID", "NAME", "VERSION", "PIPELINE", "SOURCE", "CREATED", "DRIFT"):
        table.add_column(col)
    for r in records:
        table.add_row(
            r.id[:8],
            r.name,
            str(r.version),
            r.pipeline_name,
            r.source,
            when(r.created_at),
            _drift_cell(drift[r.id]),
        )
    # Piped output keeps whole values on one line (no truncation to 80 columns).
    Console(width=None if sys.stdout.isatty() else 1000).print(table)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help=REF_HELP),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show one deployment.

    Its source, steps, parameters, outputs, and its snapshot's files."""
    from zserve.store import Store

    settings = Settings.from_env()
    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        record = store.get_deployment(ref)
        files = (
            store.get_code_archive(record.code_archive, data=False).files
            if record.code_archive
            else None
        )
    if json_:
        print_json({"deployment": record.to_dict(), "files": files})
        return
    spec = record.spec
    typer.echo(f"{record.ref}  id {record.id}")
    typer.echo(f"  pipeline:  {record.pipeline_name}")
    typer.echo(f"  source:    {record.source}  (from {record.import_root})")
    typer.echo(f"  created:   {record.created_at}")
    typer.echo(f"  capture:   {record.capture_default}")
    typer.echo("  parameters:")
    for pname, entry in spec.get("parameters", {}).items():
        extra = (
            "required" if entry.get("required") else f"default {json.dumps(entry.get('default'))}"
        )
        typer.echo(f"    {pname}: {entry.get('type')} ({extra})")
    typer.echo("  steps:")
    for s in spec.get("steps", []):
        after = f" after {', '.join(s['upstream'])}" if s.get("upstream") else ""
        typer.echo(f"    {s['name']} [{s.get('kind')}]{after}")
    typer.echo(f"  outputs:   {', '.join(spec.get('outputs', [])) or '(none)'}")
    if files is None:
        typer.echo("  code:      no snapshot (made before snapshots): served from its source path")
        return
    env = record.environment
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items()) or "(none)"
    typer.echo(f"  code:      snapshot {record.code_archive}, Python {env.get('python')}")
    typer.echo(f"  packages:  {packages}")
    typer.echo("  files:")
    for f in files:
        typer.echo(f"    {f['path']}  {f['size']} bytes  {f['sha256'][:12]}")


@app.command("diff")
def diff(
    a: str = typer.Argument(..., help="The old deployment: " + REF_HELP),
    b: str = typer.Argument(..., help="The new deployment (a bare version: of A's name)."),
    json_: bool = typer.Option(False, "--json", help="Print the list of changed files as JSON."),
) -> None:
    """Show what changed between two versions.

    The files added, removed and changed from A to B, then a unified diff.

    Lists the files added, removed and changed, then a unified diff of each changed text
    file."""
    from zserve.cli._snapshots import code_diff

    code_diff(a, b, json_)


@app.command("delete")
def delete(
    ref: str = typer.Argument(
        ..., help=REF_HELP + " A bare name: its only version, or all with --all-versions."
    ),
    all_versions: bool = typer.Option(
        False, "--all-versions", help="With a bare name that has several versions: delete all."
    ),
    force: bool = typer.Option(
        False, "--force", help="Delete even while a running server serves it."
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Delete a deployment, unless a running server serves it.

    A bare name with several versions needs --all-versions; --force deletes even what a running
    server serves."""
    from zserve.cli._snapshots import check_deletable, forget_code
    from zserve.store import Store

    settings = Settings.from_env()
    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        check_deletable(settings.home, ref, store.find_deployments(ref), all_versions, force)
        deleted = store.delete_deployment(ref)
        forget_code(settings.home, deleted, store)
    _forget_jobs(settings.home, [r.id for r in deleted])
    if json_:
        print_json({"deleted": [r.to_dict() for r in deleted]})
        return
    for r in deleted:
        typer.echo(f"Deleted {r.ref} ({r.id})")


def _drift(store: Store, record: DeploymentRecord) -> list[str]:
    """The files of ``record`` whose working copy differs from what was deployed."""
    from zserve.engine.deployments import drifted_files

    files = (
        store.get_code_archive(record.code_archive, data=False).files if record.code_archive else []
    )
    return drifted_files(record, files)


def _drift_cell(changed: list[str]) -> str:
    if not changed:
        return "no"
    return f"yes ({len(changed)} file{'s' if len(changed) > 1 else ''})"


def _forget_jobs(home: str, deployment_ids: list[str]) -> None:
    """Delete the job brokers of deleted deployments (their jobs' parameters and outputs),
    except those a running server still uses."""
    from zserve import registry
    from zserve.paths import broker_file

    serving = {s.deployment_id for s in registry.list_servers(home, leftovers=True)}
    for deployment_id in set(deployment_ids) - serving:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{broker_file(home, deployment_id)}{suffix}").unlink(missing_ok=True)
