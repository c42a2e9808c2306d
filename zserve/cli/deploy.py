"""``zserve deploy SOURCE``: import, compile and store a pipeline as a deployment."""

from __future__ import annotations

import typer

from zserve.cli._output import print_json
from zserve.records import CaptureMode
from zserve.settings import Settings


def deploy(
    source: str = typer.Argument(
        ..., help="The pipeline: 'package.module:pipeline' or 'path/to/file.py:pipeline'."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Deployment name (default: the pipeline's name)."
    ),
    capture: CaptureMode | None = typer.Option(None, "--capture", help="Default capture mode."),
    app_dir: str | None = typer.Option(
        None, "--app-dir", help="Directory to import the source from (default: the current one)."
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Import and compile a pipeline and store it as a deployment; print its id."""
    from zserve.engine.deployments import build_deployment
    from zserve.store import Store

    settings = Settings.from_env()
    draft = build_deployment(
        source, app_dir=app_dir, name=name, capture=capture,
        capture_default=settings.capture_default,
    )  # fmt: skip
    with Store(settings.store_url) as store:
        record, created = store.add_deployment(**draft.fields())
    if json_:
        print_json({"created": created, "deployment": record.to_dict()})
        return
    verb = "Deployed" if created else "Unchanged, already deployed as"
    typer.echo(f"{verb} {record.ref} ({draft.pipeline_name}, {len(draft.plan.steps)} step(s))")
    typer.echo(f"id: {record.id}")
    typer.echo(f"Serve it: zserve start --deployment {record.name} --detach")
