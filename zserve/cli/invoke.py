"""``zserve invoke``: run the pipeline on a server and print its outputs."""

from __future__ import annotations

import typer

from zserve.cli._output import fail, print_document, print_outputs
from zserve.cli._params import parse_params
from zserve.cli._target import DEPLOYMENT_OPTION, SERVER_OPTION, URL_OPTION, resolve_url
from zserve.settings import CaptureMode, Settings

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
    timeout: float | None = typer.Option(
        None, "--timeout", help="Give up after this many seconds (the server answers 504)."
    ),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(False, "--json", help="Print the server's JSON answer as it is."),
) -> None:
    """Invoke the pipeline on a running server and print its outputs."""
    from zserve.client import Client, error_from_response

    target = resolve_url(url, server, deployment)
    settings = Settings.from_env()
    timeout_client = None if timeout is None else timeout + 30
    with Client(target, auth_key=settings.auth_key, timeout=timeout_client or 300) as client:
        schema = client.info()["parameters"] if param else None
        params = parse_params(param, params_json, schema)
        response = client.invoke_response(params, capture=capture, timeout_s=timeout)
    error = error_from_response(response) if response.is_error else None
    if json_:
        print_document(response.json() if response.content else {})
        if error is not None:
            raise fail(error)
        return
    if error is not None:
        raise fail(error)
    print_outputs(response.json()["outputs"])
