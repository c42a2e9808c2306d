"""Run in a subprocess by test_run_only_writes: serve a pipeline with uvicorn in a thread,
warm it up, install an audit hook, invoke it 100 times, and print what the hook saw as JSON.

A hook cannot be removed once installed, which is why this runs in its own process.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import httpx
import uvicorn

from tests.conftest import local_app
from zserve.settings import Settings

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
WRITE_EVENTS = {
    "os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "os.truncate",
    "os.ftruncate", "os.chmod", "os.chown", "os.link", "os.symlink", "os.utime",
    "shutil.copyfile", "shutil.rmtree", "shutil.move", "sqlite3.connect",
    "sqlite3.connect/handle", "tempfile.mkstemp", "tempfile.mkdtemp",
}  # fmt: skip


def main(source: str, body: dict[str, Any], status: int) -> None:
    app = local_app(source, Settings(home=tempfile.gettempdir()))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    seen: list[str] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writes:
                seen.append(f"open {path!r} mode={mode!r} flags={flags!r}")
        elif event in WRITE_EVENTS:
            seen.append(f"{event} {args!r}"[:300])

    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(3):  # warm-up: first requests may import modules (and write .pyc files)
            assert client.post("/invoke", json=body).status_code == status
        sys.addaudithook(hook)
        statuses = [client.post("/invoke", json=body).status_code for _ in range(100)]
        during = list(seen)
        # prove the hook sees writes at all (the test fails if this one is missed)
        with tempfile.TemporaryFile("w+b"):
            pass
    server.should_exit = True
    thread.join(10)
    print(json.dumps({"statuses": statuses, "during": during, "after": seen[len(during) :]}))


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))
