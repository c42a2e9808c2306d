"""``zserve deploy SOURCE``: import, compile and store a pipeline as a deployment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from zserve.cli._output import print_json
from zserve.records import CaptureMode
from zserve.settings import Settings

if TYPE_CHECKING:
    from zserve.engine.deployments import DeploymentDraft
    from zserve.records import DeploymentRecord
    from zserve.store import Store


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
    include: list[str] | None = typer.Option(
        None,
        "--include",
        help="Also store the data files this glob matches (relative to the app dir); repeatable.",
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Import and compile a pipeline and store it, with its code, as a deployment; print its id.

    The snapshot holds the local files the import loaded and the files --include globs match;
    start and run serve it, whatever happens to the working copy later."""
    from zserve.engine.deployments import build_deployment
    from zserve.store import Store

    settings = Settings.from_env()
    draft = build_deployment(
        source, app_dir=app_dir, name=name, capture=capture,
        capture_default=settings.capture_default, include=include,
    )  # fmt: skip
    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        record, created = _store(store, draft)
    if json_:
        print_json({"created": created, "deployment": record.to_dict()})
        return
    verb = "Deployed" if created else "Unchanged, already deployed as"
    typer.echo(f"{verb} {record.ref} ({draft.pipeline_name}, {len(draft.plan.steps)} step(s))")
    typer.echo(f"id: {record.id}")
    if draft.code_archive:
        size = sum(f["size"] for f in draft.archive_files)
        typer.echo(
            f"code: {len(draft.archive_files)} file(s), {size} bytes, "
            f"snapshot {draft.code_archive[:12]}"
        )
    typer.echo(f"Serve it: zserve start --deployment {record.name} --detach")


def _store(store: Store, draft: DeploymentDraft) -> tuple[DeploymentRecord, bool]:
    """Store the snapshot, then the deployment that refers to it. A delete of the last other
    deployment of the same code can remove the archive in between (the foreign key then
    refuses the deployment): store it again."""
    from sqlalchemy.exc import IntegrityError

    for attempt in range(3):
        if draft.code_archive and draft.archive_data is not None:
            store.add_code_archive(draft.code_archive, draft.archive_data, draft.archive_files)
        try:
            return store.add_deployment(**draft.fields())
        except IntegrityError:
            if not draft.code_archive or attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
