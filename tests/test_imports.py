"""Layer rules: importing a layer loads nothing above it. Checked in fresh
interpreters, the way a user's process starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "typer", "rich", "pydantic"]


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    return {name.split(".")[0] for name in modules} | set(modules)


@pytest.mark.parametrize(
    ("code", "banned"),
    [
        ("import zserve", HEAVY),
        ("import zserve.errors, zserve.settings", HEAVY),
        ("from zserve import step, pipeline", HEAVY),
        ("import zserve.examples.weather", HEAVY),
        (
            "import zserve.engine.runner",
            ["fastapi", "starlette", "uvicorn", "sqlalchemy", "typer", "rich"],
        ),
        # redis only for a redis:// broker (open_broker imports it then)
        ("import zserve.server.app", ["sqlalchemy", "alembic", "typer", "rich", "redis"]),
        ("import zserve.cli", ["fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic"]),
    ],
)
def test_import_stays_within_its_layer(code: str, banned: list[str]) -> None:
    loaded = loaded_after(code)
    assert not loaded & set(banned), f"{code!r} loaded {sorted(loaded & set(banned))}"


def test_zserve_help_loads_no_server_or_database_code() -> None:
    code = (
        "import sys\nfrom zserve.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
    )
    loaded = loaded_after(code)
    assert not loaded & {"fastapi", "uvicorn", "sqlalchemy", "alembic", "starlette"}
