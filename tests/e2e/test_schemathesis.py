"""schemathesis against a real server's /openapi.json: every check, a fixed seed, bounded
examples and time. Zero failures: the document says what the server answers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CONFIG = ROOT / "tests" / "schemathesis.toml"


@pytest.mark.parametrize("auth", [False, True])
def test_schemathesis_finds_nothing(serve: Any, tmp_path: Path, auth: bool) -> None:
    if shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("schemathesis is not installed (the dev extra has it)")
    env = {"ZSERVE_AUTH_KEY": "k" * 32} if auth else {}
    server = serve("zserve.examples.weather:weather_pipeline", **env)
    argv = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(CONFIG), "run",
        f"{server.url}/openapi.json", "--checks", "all", "--max-examples", "25", "--seed", "7",
        "--no-color", "--request-timeout", "10",
    ]  # fmt: skip
    if auth:
        argv += ["-H", "Authorization: Bearer " + "k" * 32]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = done.stdout[done.stdout.rfind("SUMMARY") :]
    print(summary)
    assert done.returncode == 0, done.stdout[-6000:] + "\nserver log:\n" + server.output()[-4000:]
