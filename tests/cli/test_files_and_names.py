"""Owner-only files in $ZSERVE_HOME, `zserve logs` kept inside its folder, and deployment names
checked against a documented pattern."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from zserve.engine.deployments import check_name
from zserve.errors import UsageError
from zserve.paths import private_dir, private_file

WEATHER = "zserve.examples.weather:weather_pipeline"


def zserve(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZSERVE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "zserve", *args], capture_output=True, text=True, env=env,
        cwd=str(ROOT), timeout=60,
    )  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_dir_and_file_are_owner_only(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert mode(private_dir(loose)) == 0o700
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    chosen.chmod(0o755)
    assert mode(private_dir(chosen, tighten=False)) == 0o755  # the user's own folder
    assert mode(private_dir(tmp_path / "new" / "deeper", tighten=False)) == 0o700
    existing = tmp_path / "f"
    existing.write_text("data")
    existing.chmod(0o644)
    assert mode(private_file(existing)) == 0o600 and existing.read_text() == "data"


def test_deploy_leaves_an_owner_only_home_and_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = zserve("deploy", WEATHER, home=home)
    assert proc.returncode == 0, proc.stderr
    assert mode(home) == 0o700
    store = home / "zserve.db"
    assert mode(store) == 0o600
    for extra in ("zserve.db-wal", "zserve.db-shm"):
        if (home / extra).exists():
            assert mode(home / extra) == 0o600, extra


@pytest.mark.parametrize("server", ["../../outside", "../zserve.db", "/etc/passwd", "a/b"])
def test_logs_reads_nothing_outside_its_folder(tmp_path: Path, server: str) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (tmp_path / "outside.log").write_text("SECRET\n")
    proc = zserve("logs", server, home=home)
    assert proc.returncode == 2 and "SECRET" not in proc.stdout
    assert proc.stderr.startswith("Error: ")


@pytest.mark.parametrize("name", ["weather", "w.1", "a-b_c", "A" * 64, "9lives"])
def test_valid_deployment_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["../../etc/evil", "a" * 65, "", "-x", "has space", "name:2", "é", "a/b", ".hidden"]
)
def test_invalid_deployment_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="Invalid deployment name"):
        check_name(name)


def test_deploy_refuses_a_bad_name_with_one_error_line(tmp_path: Path) -> None:
    proc = zserve("deploy", WEATHER, "--name", "../../etc/evil", home=tmp_path / "home")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Error: Invalid deployment name '../../etc/evil': use 1 to 64 letters, digits, '.', '_' "
        "or '-', starting with a letter or digit (choose one with --name)"
    ]
