"""``zserve deploy SOURCE``: import, compile and store a pipeline as a deployment."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import typer

from zserve.cli._output import print_json
from zserve.settings import CaptureMode, Settings


def deploy(
    source: str = typer.Argument(
        ..., help="The pipeline: 'package.module:pipeline' or 'path/to/file.py:pipeline'."
    ),
    name: str | None = typer.Option(
        None, "--name", "-n", help="Deployment name (default: the pipeline's name)."
    ),
    capture: CaptureMode | None = typer.Option(None, "--capture", help="Default capture mode."),
    app_dir: str | None = typer.Option(
        None, "--app-dir", help="Directory to import the source from (default: the current one)."
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Import and compile a pipeline and store it as a deployment; print its id."""
    from zserve.engine.plan import compile_plan
    from zserve.errors import CaptureNotSupported
    from zserve.sdk.loader import file_hashes, load_pipeline
    from zserve.store import Store

    settings = Settings.from_env()
    # whatever the user's module prints while it is imported must not end up in --json output
    with contextlib.redirect_stdout(sys.stderr):
        loaded = load_pipeline(source, app_dir)
        pipe = loaded.pipeline
        plan = compile_plan(pipe)
    mode = capture or pipe.capture or settings.capture_default
    if mode != "none":
        raise CaptureNotSupported(
            f"Capture mode {mode!r} is not supported yet: deploy with --capture none "
            "(run-only is the only mode this version serves)"
        )
    hashes = file_hashes(pipe)
    code_hash = _digest(hashes)
    with Store(settings.store_url) as store:
        record, created = store.add_deployment(
            name=name or pipe.name,
            source=loaded.source,
            import_root=loaded.import_root,
            pipeline_name=pipe.name,
            code_hash=code_hash,
            file_hashes=hashes,
            spec=plan.spec,
            settings=pipe.settings,
            capture_default=mode,
        )
    if json_:
        print_json({"created": created, "deployment": record.to_dict()})
        return
    verb = "Deployed" if created else "Unchanged, already deployed as"
    typer.echo(f"{verb} {record.ref} ({pipe.name}, {len(plan.steps)} step(s))")
    typer.echo(f"id: {record.id}")
    typer.echo(f"Serve it: zserve start --deployment {record.name} --detach")


def _digest(hashes: dict[str, Any]) -> str:
    import hashlib

    text = "\n".join(f"{k} {v}" for k, v in sorted(hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()
