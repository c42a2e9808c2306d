"""The store's layer rule (docs/architecture.md, Layers): no server, CLI or their frameworks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("fastapi", "starlette", "typer", "uvicorn", "rich", "zserve.server", "zserve.cli")


def test_importing_the_store_loads_no_server_or_cli_modules() -> None:
    code = (
        "import sys\n"
        "import zserve.store, zserve.store.models, zserve.store.store\n"
        f"forbidden = {FORBIDDEN!r}\n"
        "print(sorted(m for m in sys.modules"
        " if any(m == f or m.startswith(f + '.') for f in forbidden)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _ruff() -> list[str]:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed")
    return [found]


@pytest.mark.parametrize("module", FORBIDDEN)
def test_ruff_bans_server_and_cli_imports_in_the_store(module: str) -> None:
    probe = f"import {module}\nfrom {module} import thing\n"
    options = ["--no-cache", "--select", "TID251", "--output-format", "concise"]
    result = subprocess.run(
        [*_ruff(), "check", *options, "--stdin-filename", "zserve/store/_layer_probe.py", "-"],
        input=probe,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count(f"`{module}` is banned") == 2, result.stdout
