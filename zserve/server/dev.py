"""The server process of ``zserve dev``: serves a pipeline's working copy on a socket its parent
bound (``ZSERVE_DEV_FD``), from a deployment record made on the fly (nothing is stored).

The parent (``zserve.cli.dev``) watches the files and starts a fresh process on every change.
When the source does not import or compile, or a resource's factory fails, this process says
why on stderr (one ``Error:`` line) and answers every request with 503 problem+json naming the
error, until the next change.

``python -m zserve.server.dev SOURCE IMPORT_ROOT``, with ``ZSERVE_SETTINGS_JSON`` set.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from zserve.errors import PROBLEM_BASE, ZServeError
from zserve.records import DeploymentRecord
from zserve.settings import SETTINGS_ENV, Settings

__all__ = ["DEV_FD_ENV", "DEV_PARENT_ENV", "dev_record", "error_app", "main"]

#: The file descriptor of the listening socket the parent hands over.
DEV_FD_ENV = "ZSERVE_DEV_FD"
#: The pid of `zserve dev`: its server stops when that process is gone (even before it started).
DEV_PARENT_ENV = "ZSERVE_DEV_PARENT"
#: The problem type of the 503 that stands in for a pipeline that does not load.
NOT_LOADED = f"{PROBLEM_BASE}pipeline-not-loaded"


def dev_record(source: str, import_root: str, name: str, spec: dict[str, Any]) -> DeploymentRecord:
    """A deployment record for the working copy: never stored, no file hashes to check."""
    return DeploymentRecord(
        id=str(uuid.uuid4()),
        name=name,
        version=0,
        source=source,
        import_root=import_root,
        pipeline_name=name,
        code_hash="dev",
        spec=spec,
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
    )


def error_app(message: str) -> Any:
    """An ASGI app that answers every request 503 problem+json with ``message``."""
    from zserve.server.problems import problem

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return  # a WebSocket: refused by the server when the app does not accept it
        response = problem(
            503, f"{message}; fix it and save: zserve dev reloads",
            type_=NOT_LOADED, title="Pipeline not loaded",
        )  # fmt: skip
        await response(scope, receive, send)

    return app


def build_app(settings: Settings, source: str, import_root: str) -> tuple[Any, str]:
    """(the app, what it serves): the pipeline's app, or ``error_app`` when it does not load."""
    from zserve.engine.plan import compile_plan
    from zserve.sdk.loader import load_pipeline

    # No .pyc for the user's code: an edit within the same second that keeps the file's size
    # would otherwise load the bytecode of the previous version.
    sys.dont_write_bytecode = True
    try:
        loaded = load_pipeline(source, import_root)
        plan = compile_plan(loaded.pipeline)
    except ZServeError as err:
        print(f"Error: {err}", file=sys.stderr, flush=True)
        return error_app(str(err)), "an error"
    from zserve.server.app import create_app

    record = dev_record(loaded.source, loaded.import_root, plan.name, plan.spec)
    # a resource that fails to build: said as an import error is; its worker answers 503 naming
    # it until the next change
    app = create_app(settings, record, plan, on_fatal=_report_failure)
    return app, f"pipeline '{plan.name}'"


def _report_failure(err: ZServeError) -> None:
    print(f"Error: {err}; fix it and save: zserve dev reloads", file=sys.stderr, flush=True)


def main() -> None:
    from zserve.server.boot import die_with_supervisor, uvicorn_options

    # the pid `zserve dev` passed, not getppid(): if it died already, that is init's
    die_with_supervisor(int(os.environ.pop(DEV_PARENT_ENV, os.getppid())))
    import uvicorn

    source, import_root = sys.argv[1], sys.argv[2]
    settings = Settings.from_json(os.environ[SETTINGS_ENV])
    sock = socket.socket(fileno=int(os.environ.pop(DEV_FD_ENV)))
    app, what = build_app(settings, source, import_root)
    options = uvicorn_options(settings)  # as boot.py serves a deployment
    config = uvicorn.Config(app, **options)
    print(f"zserve dev: serving {what} (pid {os.getpid()})", file=sys.stderr, flush=True)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has drained: a clean stop (boot.py)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    server.run(sockets=[sock])
    sys.exit(0 if server.started else 3)


if __name__ == "__main__":
    main()
