"""``zserve dev``: a real command on a temporary project, edited while it serves."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import kill_tree, taken_port, wait_for
from zserve.errors import PortInUse

PIPELINE = """from zserve import pipeline, step


@step
def greet(name: str) -> str:
    return f"{word} {{name}}"


@pipeline
def hello(name: str) -> str:
    return greet(name)
"""


class Dev:
    """``zserve dev`` in a project folder, its stdout and stderr read line by line."""

    def __init__(self, project: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zserve", "dev", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(project),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def rest(self) -> list[str]:
        """The lines not read yet, once the process has ended."""
        rest = []
        while (line := self.queue.get(timeout=10)) is not None:
            rest.append(line)
        return rest

    def wait_line(self, pattern: str, deadline_s: float = 30) -> str:
        """The next line matching ``pattern`` (the lines before it are kept in ``lines``)."""
        while True:
            try:
                line = self.queue.get(timeout=deadline_s)
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no line matching {pattern!r}; got {self.lines}")
            self.lines.append(line)
            if re.search(pattern, line):
                return line


@pytest.fixture
def dev(zhome: Path) -> Iterator[Any]:
    started: list[Dev] = []

    def start(project: Path, *args: str) -> Dev:
        started.append(Dev(project, *args))
        return started[-1]

    yield start
    for d in started:
        if d.proc.poll() is None:
            kill_tree(d.proc.pid)
            d.proc.wait(10)


def invoke(url: str) -> httpx.Response:
    return httpx.post(url + "/invoke", json={"parameters": {"name": "Ada"}}, timeout=10)


def answers(url: str, output: str) -> bool:
    try:
        response = invoke(url)
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.json()["outputs"]["output"] == output


@pytest.mark.slow
def test_dev_reloads_on_edit_reports_errors_and_stops_on_sigterm(dev: Any, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    source = project / "greeting.py"
    source.write_text(PIPELINE.format(word="hello"))
    proc = dev(project, "greeting.py:hello", "--port", "0")
    url = re.search(r" at (http://\S+?);", proc.wait_line(r"^zserve dev: ")).group(1)
    wait_for(lambda: answers(url, "hello Ada"), "the first answer")

    source.write_text(PIPELINE.format(word="bonjour"))
    proc.wait_line(r"^reloading: greeting\.py changed$")
    wait_for(lambda: answers(url, "bonjour Ada"), "the edited pipeline's answer")

    source.write_text(PIPELINE.format(word="hola").replace("return greet", "return greet("))
    assert "SyntaxError" in proc.wait_line(r"^Error: Importing .*greeting\.py")

    def unavailable() -> httpx.Response | None:
        try:
            response = invoke(url)
        except httpx.TransportError:  # between two server processes
            return None
        return response if response.status_code == 503 else None

    problem = wait_for(unavailable, "503 for the broken source")
    assert problem.headers["content-type"] == "application/problem+json"
    assert problem.json()["type"].endswith("/pipeline-not-loaded")
    assert "SyntaxError" in problem.json()["detail"]
    assert httpx.get(url + "/health", timeout=10).status_code == 503

    source.write_text(PIPELINE.format(word="hola"))
    wait_for(lambda: answers(url, "hola Ada"), "the fixed pipeline's answer")

    children = psutil.Process(proc.proc.pid).children(recursive=True)
    assert children, "zserve dev serves from a child process"
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(30) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left behind: {alive}"


def test_dev_on_a_port_in_use_is_one_error_line(dev: Any, tmp_path: Path) -> None:
    (tmp_path / "greeting.py").write_text(PIPELINE.format(word="hello"))
    with taken_port() as port:
        proc = dev(tmp_path, "greeting.py:hello", "--port", str(port))
        code = proc.proc.wait(30)
    assert code == PortInUse.exit_code
    assert proc.rest() == [
        f"Error: Port {port} on 127.0.0.1 is in use by another program (not a zserve server of "
        "this ZSERVE_HOME): stop it, or pick a free port with --port 0"
    ]
