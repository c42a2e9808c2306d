"""``zserve run``: run a pipeline in this process with the same engine, no server."""

from __future__ import annotations

import re
import traceback
from typing import Any

import typer

from zserve.cli._output import fail, print_document, print_outputs
from zserve.cli.invoke import CAPTURE_OPTION, PARAM_OPTION, PARAMS_JSON_OPTION
from zserve.errors import ResourceFailed, StepFailed, ZServeError
from zserve.records import CaptureMode, new_job_id


def run(
    target: str = typer.Argument(
        ...,
        help="A source ('package.module:pipeline', 'path/file.py:pipeline') or a deployment "
        "(id, name, or name:version).",
    ),
    param: list[str] | None = PARAM_OPTION,
    params_json: str | None = PARAMS_JSON_OPTION,
    capture: CaptureMode | None = CAPTURE_OPTION,
    timeout: float | None = typer.Option(None, "--timeout", help="Give up after S seconds."),
    app_dir: str | None = typer.Option(
        None, "--app-dir", help="Directory to import a source from (default: the current one)."
    ),
    show_traceback: bool = typer.Option(
        False,
        "--traceback",
        help="When a step or a resource's factory raises, also print its traceback.",
    ),
    json_: bool = typer.Option(False, "--json", help="Print the same JSON a server answers."),
) -> None:
    """Run a pipeline in-process (no server): same engine, output and exit codes as invoke."""
    import asyncio

    from zserve.cli._params import parse_params
    from zserve.engine.capture import require_run_only
    from zserve.engine.plan import compile_plan
    from zserve.engine.values import success_body
    from zserve.engine.worker import run_once
    from zserve.sdk.loader import load_pipeline

    source, root = _source(target, app_dir)
    plan = compile_plan(load_pipeline(source, root).pipeline)
    job_id = new_job_id()
    try:
        require_run_only(
            capture, fix="`zserve run` records nothing; serve it and use `zserve invoke --capture`"
        )
        values = plan.validate_parameters(parse_params(param, params_json, plan.schema))
        # its resources are built for this one run, and torn down after it (also on failure)
        outputs, elapsed = asyncio.run(run_once(plan, values, job_id=job_id, timeout_s=timeout))
    except ZServeError as err:
        if (
            show_traceback
            and isinstance(err, StepFailed | ResourceFailed)
            and err.__cause__ is not None
        ):
            traceback.print_exception(err.__cause__)
        if json_:
            extra: dict[str, Any] = {"job_id": job_id, "run_id": None}
            print_document(err.to_problem(**extra))
        raise fail(err, plan.schema) from None
    if json_:
        print_document(success_body(outputs, job_id, "none", elapsed))
        return
    print_outputs(outputs)


def _source(target: str, app_dir: str | None) -> tuple[str, str | None]:
    """A source is 'module:attr' or 'file.py:attr'; anything else names a deployment, run
    from its snapshot."""
    if ":" in target and not re.fullmatch(r"[^:]+:\d+", target):
        return target, app_dir
    from zserve.engine.deployments import load_location
    from zserve.server.snapshot import prepare
    from zserve.settings import Settings
    from zserve.store import Store

    settings = Settings.from_env()
    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        record = store.get_deployment(target)
    served, warnings = prepare(settings, record)  # its snapshot, not the working copy
    for line in warnings:
        typer.echo(line, err=True)
    return load_location(served)
