"""``zserve invoke``: run the pipeline on a server and print its outputs; ``--async`` submits
a job and prints its id, ``--stream`` follows its events (Ctrl-C cancels it): on the answer of
one ``POST /invoke`` when the server offers that (``GET /info`` features ``invoke-stream``),
else as a job submitted and followed on ``GET /stream/ID``."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import typer

from zserve.cli._output import fail, print_document, print_outputs
from zserve.cli._params import parse_params
from zserve.cli._target import DEPLOYMENT_OPTION, SERVER_OPTION, URL_OPTION, resolve_url
from zserve.errors import InvalidParameters, UsageError, ZServeError
from zserve.records import CaptureMode, JobStatus
from zserve.settings import Settings

if TYPE_CHECKING:
    from zserve.client import Client

PARAM_OPTION = typer.Option(
    None, "--param", "-p", help="A parameter as name=value (repeatable); typed by the pipeline."
)
PARAMS_JSON_OPTION = typer.Option(
    None, "--params-json", help="Parameters as a JSON object, @file.json, or @- for stdin."
)
CAPTURE_OPTION = typer.Option(None, "--capture", help="Capture mode for this run.")


def invoke(
    param: list[str] | None = PARAM_OPTION,
    params_json: str | None = PARAMS_JSON_OPTION,
    capture: CaptureMode | None = CAPTURE_OPTION,
    sample_rate: float | None = typer.Option(
        None, "--sample-rate", min=0.0, max=1.0, help="With --capture sampled: the share recorded."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Give up after this many seconds (the server answers 504)."
    ),
    async_: bool = typer.Option(
        False, "--async", help="Submit a background job and print its id (`zserve jobs show`)."
    ),
    idempotency_key: str | None = typer.Option(
        None,
        "--idempotency-key",
        metavar="KEY",
        help="With --async: the job's key (1-255 printable ASCII characters). Submitting it "
        "again with the same request starts nothing: it prints the first job's id, on any host "
        "sharing the broker.",
    ),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Run it and follow its events live until it ends (on the answer of one request "
        "when the server offers it, else as a submitted job); Ctrl-C cancels it.",
    ),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(
        False,
        "--json",
        help="Print the server's JSON answer as it is (with --stream: every event, as one "
        "document when the job ends).",
    ),
    jsonl: bool = typer.Option(
        False, "--jsonl", help="With --stream: each event as one JSON line as it arrives."
    ),
) -> None:
    """Invoke the pipeline on a running server and print its outputs; with --async or --stream
    run it as a background job. Exit 0 completed, 1 failed, 5 cancelled."""
    from zserve.client import INVOKE_STREAM, Client, error_from_response

    if jsonl and not stream:
        raise UsageError("--jsonl prints a job's events as they come: give it with --stream")
    if jsonl and json_:
        raise UsageError("Give --json (one document at the end) or --jsonl (a line per event)")
    if idempotency_key is not None and not async_:
        raise UsageError(
            "--idempotency-key names a background job: give it with --async (a sync invoke "
            "starts no job to find again)"
        )
    target = resolve_url(url, server, deployment)
    settings = Settings.from_env()
    timeout_client = None if timeout is None else timeout + 30
    with Client(target, auth_key=settings.auth_key, timeout=timeout_client or 300) as client:
        info = client.info() if param or stream else None
        schema = info["parameters"] if param and info is not None else None
        params = parse_params(param, params_json, schema)
        # a key names a submitted job: --async --stream with a key submits, then follows
        if stream and idempotency_key is None and info and client.offers(INVOKE_STREAM):
            _stream(client, info, params, capture, sample_rate, timeout, json_=json_,
                    jsonl=jsonl)  # fmt: skip
            return
        if async_ or stream:
            _submit(client, params, capture, sample_rate, timeout, stream=stream, json_=json_,
                    jsonl=jsonl, idempotency_key=idempotency_key)  # fmt: skip
            return
        response = client.invoke_response(
            params, capture=capture, sample_rate=sample_rate, timeout_s=timeout
        )
        error = error_from_response(response) if response.is_error else None
        if error is not None and schema is None and isinstance(error, InvalidParameters):
            schema = _schema(client)
    if json_:
        print_document(response.json() if response.content else {})
        if error is not None:
            raise fail(error, schema)
        return
    if error is not None:
        raise fail(error, schema)
    doc = response.json()
    print_outputs(doc["outputs"])
    if doc.get("capture_requested"):
        typer.echo(
            f"Capture {doc['capture_requested']!r} is above this server's ceiling: served as "
            f"{doc['capture']!r}",
            err=True,
        )
    if doc.get("run_id"):
        typer.echo(
            f"Recorded as run {doc['run_id']}: zserve runs show {doc['run_id'][-8:]}", err=True
        )


def _schema(client: Client) -> dict[str, dict[str, Any]] | None:
    """The pipeline's parameters (``GET /info``), to name their types in an error; None if the
    server does not say."""
    try:
        parameters = client.info().get("parameters")
    except ZServeError:
        return None
    return parameters if isinstance(parameters, dict) else None


def _submit(
    client: Client,
    params: dict[str, Any],
    capture: str | None,
    sample_rate: float | None,
    timeout: float | None,
    *,
    stream: bool,
    json_: bool,
    jsonl: bool = False,
    idempotency_key: str | None = None,
) -> None:
    """``POST /invoke?mode=async``; print the job id (or the 202 document), or follow it."""
    from zserve.cli.stream import follow, interrupted
    from zserve.client import error_from_response

    response = client.submit_response(
        params, capture=capture, sample_rate=sample_rate, timeout_s=timeout,
        idempotency_key=idempotency_key,
    )  # fmt: skip
    if response.is_error:
        if json_:
            print_document(response.json() if response.content else {})
        error = error_from_response(response)
        raise fail(error, _schema(client) if isinstance(error, InvalidParameters) else None)
    accepted: dict[str, Any] = response.json()
    if not stream:
        if json_:
            print_document(accepted)
        else:
            typer.echo(accepted["job_id"])
        return
    job_id = accepted["job_id"]
    try:
        job = client.job(job_id)  # its steps, so the live view can list them up front
    except KeyboardInterrupt:
        interrupted(client, job_id, cancel=True)
        raise typer.Exit(130) from None
    follow(client, job, as_json=json_, as_jsonl=jsonl, cancel_on_interrupt=True)


def _stream(
    client: Client,
    info: dict[str, Any],
    params: dict[str, Any],
    capture: str | None,
    sample_rate: float | None,
    timeout: float | None,
    *,
    json_: bool,
    jsonl: bool,
) -> None:
    """``--stream`` with a server that answers an invoke with its events: one ``POST /invoke``
    followed to its end; Ctrl-C closes it, which cancels the job."""
    from zserve.cli.stream import follow

    events = client.invoke_stream(
        params, capture=capture, sample_rate=sample_rate, timeout_s=timeout
    )
    try:
        first = next(events)  # job.queued: the job was admitted
    except ZServeError as err:
        if json_:
            print_document(err.problem_doc or {})
        raise fail(err, _schema(client) if isinstance(err, InvalidParameters) else None) from None
    except KeyboardInterrupt:
        events.close()
        typer.echo("Interrupted: the invocation is cancelled (its stream closed)", err=True)
        raise typer.Exit(130) from None
    steps = [s for s in info.get("steps") or [] if isinstance(s, dict)]
    job = {"job_id": first["job_id"], "steps": steps, "status": JobStatus.QUEUED}
    follow(client, job, as_json=json_, as_jsonl=jsonl, cancel_on_interrupt=True,
           events=_after(first, events))  # fmt: skip


def _after(
    first: dict[str, Any], rest: Generator[dict[str, Any], None, None]
) -> Generator[dict[str, Any], None, None]:
    """``first``, then ``rest``; closing it closes ``rest``."""
    try:
        yield first
        yield from rest
    finally:
        rest.close()
