"""Deployments as immutable snapshots, through the real command line and real servers on a real
SQLite store: a version serves the code it was deployed with, whatever happens to the working
copy; drift, show, diff; and the delete refusals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import cli, forget_snapshot

pytestmark = pytest.mark.slow

WEATHER = """\
from pathlib import Path

from helpers import scale

from zserve import pipeline, step


@step
def forecast(days: int) -> dict:
    data = (Path(__file__).parent / "data.txt").read_text().strip()
    return {"temp": scale(days), "version": "v1", "data": data, "file": __file__}


@pipeline
def weather(days: int = 1) -> dict:
    return forecast(days)
"""


def _project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "weather.py").write_text(WEATHER)
    (proj / "helpers.py").write_text("def scale(days: int) -> int:\n    return days * 10\n")
    (proj / "data.txt").write_text("sunny\n")
    (proj / "notes.txt").write_text("not included\n")
    return proj


def _deploy(proj: Path, *extra: str) -> dict[str, Any]:
    out = cli("deploy", "weather.py:weather", "--app-dir", str(proj), "--json", *extra).stdout
    doc: dict[str, Any] = json.loads(out)
    return doc


def _archives(home: Path) -> list[str]:
    conn = sqlite3.connect(home / "zserve.db")
    try:
        return [row[0] for row in conn.execute("SELECT hash FROM code_archives ORDER BY hash")]
    finally:
        conn.close()


def _deployment_id(name: str, version: int) -> str:
    """The id of deployment ``name:version``."""
    doc = json.loads(cli("deployments", "show", f"{name}:{version}", "--json").stdout)
    deployment_id: str = doc["deployment"]["id"]
    return deployment_id


def _start(started: list[dict[str, Any]], ref: str, *extra: str) -> tuple[dict[str, Any], str]:
    """``zserve start --detach --json``: (its document, its stderr)."""
    proc = cli("start", "-d", ref, "--port", "0", "--detach", "--json", *extra)
    doc: dict[str, Any] = json.loads(proc.stdout)
    started.append(doc)
    return doc, proc.stderr


def _invoke(url: str, days: int = 2) -> dict[str, Any]:
    answer = httpx.post(f"{url}/invoke", json={"parameters": {"days": days}}, timeout=30)
    assert answer.status_code == 200, answer.text
    output: dict[str, Any] = answer.json()["outputs"]["output"]
    return output


def _stop(server: dict[str, Any]) -> None:
    cli("stop", server["server_id"])


def _edit(proj: Path) -> None:
    text = (proj / "weather.py").read_text()
    (proj / "weather.py").write_text(text.replace('"v1"', '"v2"'))


def test_each_version_serves_its_snapshot_whatever_happens_to_the_working_copy(
    zhome: Path, tmp_path: Path, started: list[dict[str, Any]]
) -> None:
    proj = _project(tmp_path)
    first = _deploy(proj, "--include", "data.txt")
    v1 = first["deployment"]
    assert (first["created"], v1["version"]) == (True, 1)
    assert v1["environment"]["include"] == ["data.txt"]
    code_dir = zhome / "code" / v1["code_archive"]

    _edit(proj)
    server, err = _start(started, "weather:1")
    redeploy = (
        f"zserve deploy {proj}/weather.py:weather --name weather --app-dir {proj} "
        "--include data.txt"
    )
    assert err.splitlines() == [
        f"serving weather:1 as deployed; weather.py changed since — run `{redeploy}` to serve "
        "your edits"
    ]
    # v1's behaviour, imported from the extracted snapshot, with its --include data file
    assert _invoke(server["url"]) == {
        "temp": 20, "version": "v1", "data": "sunny", "file": str(code_dir / "weather.py"),
    }  # fmt: skip
    info = httpx.get(f"{server['url']}/info", timeout=30).json()["deployment"]
    assert info["source"] == f"{proj}/weather.py:weather"  # as deployed
    assert sorted(p.name for p in code_dir.iterdir() if p.is_file()) == [
        "data.txt", "helpers.py", "weather.py",
    ]  # fmt: skip
    assert not (code_dir / "weather.py").stat().st_mode & 0o222  # read-only
    _stop(server)

    second = _deploy(proj, "--include", "data.txt")
    assert (second["created"], second["deployment"]["version"]) == (True, 2)
    server, err = _start(started, "weather:2")
    assert err == ""
    assert _invoke(server["url"])["version"] == "v2"
    _stop(server)

    server, _ = _start(started, "weather:1")  # v1 still starts
    assert _invoke(server["url"])["version"] == "v1"
    _stop(server)

    (proj / "weather.py").unlink()
    (proj / "helpers.py").unlink()
    server, err = _start(started, "weather:1")  # its source is gone: it still starts
    assert "serving weather:1 as deployed; helpers.py, weather.py changed since" in err
    assert _invoke(server["url"], days=3) == {
        "temp": 30, "version": "v1", "data": "sunny", "file": str(code_dir / "weather.py"),
    }  # fmt: skip
    _stop(server)

    # `zserve run` serves the snapshot too
    ran = cli("run", "weather:2", "--param", "days=1", "--json")
    assert json.loads(ran.stdout)["outputs"]["output"]["version"] == "v2"
    assert "serving weather:2 as deployed; helpers.py, weather.py changed since" in ran.stderr


def test_several_workers_import_the_pipeline_from_the_extracted_folder(
    zhome: Path, tmp_path: Path, started: list[dict[str, Any]]
) -> None:
    proj = _project(tmp_path)
    dep = _deploy(proj, "--include", "*.txt")["deployment"]
    _edit(proj)
    server, _ = _start(started, "weather", "--workers", "2")
    files = {_invoke(server["url"])["file"] for _ in range(6)}
    assert files == {str(zhome / "code" / dep["code_archive"] / "weather.py")}
    _stop(server)


def test_identical_code_makes_one_archive_and_include_adds_only_what_it_names(
    zhome: Path, tmp_path: Path
) -> None:
    proj = _project(tmp_path)
    first = _deploy(proj, "--include", "data.txt")
    again = _deploy(proj, "--include", "data.txt")
    assert again["created"] is False
    assert again["deployment"]["id"] == first["deployment"]["id"]
    other = json.loads(
        cli("deploy", "weather.py:weather", "--app-dir", str(proj), "--name", "copy",
            "--include", "data.txt", "--json").stdout
    )["deployment"]  # fmt: skip
    assert other["code_archive"] == first["deployment"]["code_archive"]
    assert _archives(zhome) == [first["deployment"]["code_archive"]]

    shown = json.loads(cli("deployments", "show", "weather", "--json").stdout)
    assert [f["path"] for f in shown["files"]] == ["data.txt", "helpers.py", "weather.py"]
    text = cli("deployments", "show", "weather").stdout
    size = len((proj / "helpers.py").read_bytes())
    assert f"    helpers.py  {size} bytes  " in text

    missing = cli("deploy", "weather.py:weather", "--app-dir", str(proj), "--include", "*.csv",
                  check=False)  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"Error: --include '*.csv' matches no file under {proj}: check the glob"
    )


def test_list_marks_drift_and_diff_shows_the_edit(zhome: Path, tmp_path: Path) -> None:
    proj = _project(tmp_path)
    _deploy(proj)
    listed = json.loads(cli("deployments", "list", "--json").stdout)["deployments"]
    assert [(d["drifted"], d["drifted_files"]) for d in listed] == [(False, [])]

    _edit(proj)
    listed = json.loads(cli("deployments", "list", "--json").stdout)["deployments"]
    assert [(d["drifted"], d["drifted_files"]) for d in listed] == [(True, ["weather.py"])]
    table = cli("deployments", "list").stdout.splitlines()
    assert "DRIFT" in table[0] and table[1].rstrip().endswith("yes (1 file)")

    _deploy(proj, "--include", "data.txt")
    diff = cli("deployments", "diff", "1", "2")
    assert diff.stdout.splitlines()[:6] == [
        "added    data.txt",
        "changed  weather.py",
        "--- weather:1/weather.py",
        "+++ weather:2/weather.py",
        "@@ -8,7 +8,7 @@",
        " @step",
    ]
    assert '-    return {"temp": scale(days), "version": "v1", ' in diff.stdout
    assert '+    return {"temp": scale(days), "version": "v2", ' in diff.stdout
    as_json = json.loads(cli("deployments", "diff", "weather:1", "weather:2", "--json").stdout)
    assert as_json["files"] == [
        {"path": "data.txt", "status": "added"},
        {"path": "weather.py", "status": "changed"},
    ]
    same = cli("deployments", "diff", "weather:2", "2")
    assert same.stdout == "weather:2 and weather:2 have the same code\n"

    forget_snapshot(zhome, _deployment_id("weather", 1))  # as if made before snapshots
    old = cli("deployments", "diff", "weather:1", "weather:2", check=False)
    assert (old.returncode, old.stderr.splitlines()) == (2, [
        "Error: Deployment weather:1 has no stored code (it was made before snapshots): nothing "
        "to compare; redeploy it to store a snapshot"
    ])  # fmt: skip
    shown = cli("deployments", "show", "weather:1").stdout
    assert "code:      no snapshot (made before snapshots): served from its source path" in shown


def test_a_snapshot_built_against_other_package_versions_warns_at_start(
    zhome: Path, tmp_path: Path, started: list[dict[str, Any]]
) -> None:
    proj = _project(tmp_path)
    (proj / "helpers.py").write_text(
        "import httpx\n\n\ndef scale(days: int) -> int:\n    return days * 10\n"
    )
    dep = _deploy(proj, "--include", "data.txt")["deployment"]
    installed = httpx.__version__
    assert dep["environment"]["packages"] == {"httpx": installed}
    conn = sqlite3.connect(zhome / "zserve.db")
    with conn:
        env = {**dep["environment"], "packages": {"httpx": "0.0.1"}}
        conn.execute("UPDATE deployments SET environment = ?", (json.dumps(env),))
    conn.close()
    server, err = _start(started, "weather")
    assert err.splitlines() == [
        f"Warning: weather:1 was deployed with httpx 0.0.1; {installed} is installed"
    ]
    _stop(server)


def test_delete_refuses_a_served_deployment_and_several_versions(
    zhome: Path, tmp_path: Path, started: list[dict[str, Any]]
) -> None:
    proj = _project(tmp_path)
    _deploy(proj)
    _edit(proj)
    _deploy(proj)
    assert len(_archives(zhome)) == 2
    server, _ = _start(started, "weather:1")
    sid, url = server["server_id"], server["url"]

    def delete(*args: str) -> subprocess.CompletedProcess[str]:
        return cli("deployments", "delete", *args, check=False)

    several = delete("weather")
    assert several.returncode == 2
    assert several.stderr.splitlines() == [
        "Error: Deployment 'weather' has 2 versions (1, 2): pass --all-versions to delete them "
        "all, or name one, such as weather:2"
    ]
    served = (
        f"Error: Deployment weather:1 is served by server {sid} ({url}): run `zserve stop {sid}` "
        "first, or pass --force"
    )
    for args in (("weather:1",), ("weather", "--all-versions")):
        refused = delete(*args)
        assert (refused.returncode, refused.stderr.splitlines()) == (2, [served]), args
    assert len(json.loads(cli("deployments", "list", "--json").stdout)["deployments"]) == 2

    v1_hash, v2_hash = (
        json.loads(cli("deployments", "show", ref, "--json").stdout)["deployment"]["code_archive"]
        for ref in ("weather:1", "weather:2")
    )
    cli("run", "weather:2", "--param", "days=1", check=False)  # extracts v2's code
    assert sorted(p.name for p in (zhome / "code").iterdir()) == sorted([v1_hash, v2_hash])
    assert delete("weather:2").stdout.startswith("Deleted weather:2 ")  # not served
    assert len(_archives(zhome)) == 1
    # its extracted code went with it; v1's stays while a server serves from it
    assert [p.name for p in (zhome / "code").iterdir()] == [v1_hash]
    forced = delete("weather:1", "--force")
    assert forced.returncode == 0 and forced.stdout.startswith("Deleted weather:1 ")
    assert _archives(zhome) == []
    assert [p.name for p in (zhome / "code").iterdir()] == [v1_hash]
    _stop(server)
