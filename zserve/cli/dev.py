"""``zserve dev SOURCE``: serve a pipeline's working copy and reload it when its code changes.

This process binds the socket once (the port stays the same across reloads), starts one server
process on it (``python -m zserve.server.dev``), and watches the import root's ``.py`` files
with watchfiles. On a change it says which files changed, stops that server and starts a fresh
one. A source that does not import or compile is reported (an ``Error:`` line) and answered
503 problem+json until it is fixed. Ctrl-C or SIGTERM stops the server, then this process
(exit 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import typer

from zserve.settings import SETTINGS_ENV, Settings

#: How often the watcher wakes up without a change, to notice a server that exited (ms).
WAKE_MS = 500
#: How long a server may take to stop beyond its drain time before it is killed (seconds).
STOP_MARGIN_S = 5.0


def dev(
    source: str = typer.Argument(
        ..., help="The pipeline: 'package.module:pipeline' or 'path/to/file.py:pipeline'."
    ),
    host: str | None = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(
        None, "--port", help="Port to bind (default 8001; 0 picks a free one)."
    ),
    app_dir: str | None = typer.Option(
        None, "--app-dir", help="Directory to import the source from (default: the current one)."
    ),
    no_ui: bool = typer.Option(
        False, "--no-ui", help="Leave the dashboard at /ui out (ZSERVE_UI=0)."
    ),
) -> None:
    """Serve a pipeline's working copy (nothing deployed); reload when a .py file changes."""
    from zserve.sdk.loader import split_source
    from zserve.server.boot import bind_socket, open_address_warning

    target, _ = split_source(source)
    root = Path(app_dir or Path.cwd()).resolve()
    watched = [root]
    if target.endswith(".py") or "/" in target:
        folder = Path(target).resolve().parent
        if not folder.is_relative_to(root):
            watched.append(folder)
    settings = Settings.from_env(host=host, port=port, ui=False if no_ui else None)
    settings = settings.replace(workers=1)
    sock = bind_socket(settings.host, settings.port)
    settings = settings.replace(port=sock.getsockname()[1])
    if warning := open_address_warning(settings):
        typer.echo(warning, err=True)
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    typer.echo(
        f"zserve dev: {source} at http://{shown}:{settings.port}; reloads when a .py file "
        f"under {', '.join(map(str, watched))} changes (Ctrl-C stops)",
        err=True,
    )
    child = _Child(source, str(root), settings, sock.fileno())
    try:
        _watch(watched, child)
    finally:
        child.stop()
        sock.close()


def _watch(watched: list[Path], child: _Child) -> None:
    """Restart ``child`` on every change to a watched .py file, until SIGINT or SIGTERM."""
    from watchfiles import PythonFilter, watch

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    child.start()
    changes_seen = watch(
        *watched, watch_filter=PythonFilter(), stop_event=stop, rust_timeout=WAKE_MS,
        yield_on_timeout=True, raise_interrupt=False,
    )  # fmt: skip
    for changes in changes_seen:
        if stop.is_set():
            break
        if not changes:
            child.notice_exit()
            continue
        names = sorted({_shown(Path(path), watched) for _, path in changes})
        typer.echo(f"reloading: {', '.join(names)} changed", err=True)
        child.stop()
        child.start()


def _shown(path: Path, watched: list[Path]) -> str:
    for folder in watched:
        if path.is_relative_to(folder):
            return str(path.relative_to(folder))
    return str(path)


class _Child:
    """The server process: one at a time, on the socket this process bound."""

    def __init__(self, source: str, root: str, settings: Settings, fd: int) -> None:
        from zserve.server.dev import DEV_FD_ENV, DEV_PARENT_ENV

        self.argv = [sys.executable, "-m", "zserve.server.dev", source, root]
        self.env = {**os.environ, SETTINGS_ENV: settings.to_json(), DEV_FD_ENV: str(fd),
                    DEV_PARENT_ENV: str(os.getpid())}  # fmt: skip
        self.fd = fd
        self.grace_s = settings.grace_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.reported = False

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, env=self.env, pass_fds=(self.fd,), stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches this process, which stops the server
        )  # fmt: skip
        self.reported = False

    def notice_exit(self) -> None:
        """Say once that the server exited on its own (it is started again on a change)."""
        if self.proc is not None and self.proc.poll() is not None and not self.reported:
            self.reported = True
            typer.echo(
                f"zserve dev: the server exited with code {self.proc.returncode}; "
                "waiting for a change",
                err=True,
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.grace_s + STOP_MARGIN_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
