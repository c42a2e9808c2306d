"""The README's commands, run in the order it gives them, as a new user on a fresh clone would:
the "Deploy, serve, invoke" block, then the spec's quickstart. Only what cannot run unattended is
changed: `SERVER` becomes the id of the server started above, `logs -f` does not follow, the
quickstart's port is a free one, and `python` is this virtualenv's."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import taken_port

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def bash_block_after(heading: str) -> list[str]:
    """The first ```bash block after ``heading``: its commands, continuation lines joined."""
    section = README.split(heading, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def run(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", line], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{line}\nexit {done.returncode}\n{done.stdout}{done.stderr}"
    return done


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A shell with the virtualenv's `zserve` first on PATH and a home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSERVE_", "ZENML_"))}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", ZSERVE_HOME=str(tmp_path / "home"))
    return env


def test_deploy_serve_invoke_as_the_readme_says(user_env: dict[str, str]) -> None:
    commands = bash_block_after("## Deploy, serve, invoke")
    assert [c.split()[1] for c in commands] == [
        "deploy", "start", "invoke", "ps", "logs", "stop", "run",
    ]  # fmt: skip
    with taken_port() as port:
        pass  # a port free a moment ago: the server of the walk takes it
    user_env["ZSERVE_PORT"] = str(port)
    server_id = None
    outputs: dict[str, str] = {}
    try:
        for line in commands:
            command = line.split("#", 1)[0].strip()
            verb = command.split()[1]
            if server_id is not None:
                command = command.replace("SERVER", server_id)
            command = re.sub(r" -f$", "", command)  # follow: the walk reads the log once
            outputs[verb] = run(command, user_env).stdout
            if verb == "start":
                ps = run("zserve ps --json", user_env).stdout
                (server,) = json.loads(ps)["servers"]
                server_id = server["id"]
    finally:
        subprocess.run(["bash", "-c", "zserve stop --all"], env=user_env, capture_output=True,
                       timeout=60)  # fmt: skip
    assert re.search(r"[0-9a-f]{8}-", outputs["deploy"])
    assert "Paris over 3 day(s)" in outputs["invoke"]
    assert server_id is not None and server_id in outputs["ps"]
    assert "serving deployment" in outputs["logs"]
    assert "Paris over 1 day(s)" in outputs["run"]
    assert json.loads(run("zserve ps --json", user_env).stdout)["servers"] == []


def test_the_specs_quickstart_as_the_readme_says(user_env: dict[str, str]) -> None:
    deployed = run("zserve deploy zserve.examples.weather:weather_pipeline --json", user_env)
    deployment_id = json.loads(deployed.stdout)["deployment"]["id"]
    block = bash_block_after("The spec's quickstart works as written")
    server_at = next(i for i, line in enumerate(block) if "zserve.server.app" in line)
    with taken_port() as port:
        pass
    script = [
        line.replace("<deployment-uuid>", deployment_id).replace("8001", str(port))
        for line in block[:server_at]
    ]
    script += [
        f'{shlex.quote(sys.executable)} -m zserve.server.app > "$ZSERVE_HOME/server.log" 2>&1 &',
        "trap 'kill $! 2>/dev/null; wait' EXIT",
        f"for _ in $(seq 200); do curl -sf localhost:{port}/health > /dev/null && break; "
        "sleep 0.1; done",
    ]
    script += [
        f"{line.replace('8001', str(port))}; echo" for line in block[server_at + 1 :]
    ]  # each answer on a line of its own
    done = run("set -e\n" + "\n".join(script), user_env)
    answers: list[Any] = [json.loads(line) for line in done.stdout.splitlines() if line]
    assert len(answers) == 4
    invoked, health, info, tokyo = answers
    assert invoked["success"] is True and "Paris" in invoked["outputs"]["output"]
    assert health["status"] == "healthy" and health["deployment_id"] == deployment_id
    assert info["pipeline"] == "weather_pipeline" and info["deployment"]["id"] == deployment_id
    assert tokyo["capture"] == "none" and "Tokyo" in tokyo["outputs"]["output"]
