"""``zserve runs list|show|artifact|prune``, through Typer's CliRunner on a real SQLite store.

The runs are ``RunRecord``s written with a real ``Store`` (as the recorder's writer does), for two
real deployments made with ``zserve deploy``: the commands read them back from the store alone.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zserve.cli import app
from zserve.errors import RunNotFound
from zserve.records import ArtifactRecord as Artifact
from zserve.records import JobStatus, RunRecord, StepRun, StepStatus
from zserve.store import Store

WEATHER = "zserve.examples.weather:weather_pipeline"
PIPE = "weather_pipeline"
DAY = 86400.0
runner = CliRunner()

# Run ids: FAILED and FULL share the prefix "abcd"; OLD_A and OLD_B started days ago.
FAILED = "abcd1111-0000-4000-8000-000000000001"
FULL = "abcd2222-0000-4000-8000-000000000002"
OLD_A = "01d0aaaa-0000-4000-8000-000000000003"
OLD_B = "01d0bbbb-0000-4000-8000-000000000004"

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/flows/weather.py", line 12, in analyze_data\n'
    "    raise ValueError(f'no data for {city}')\n"
    "ValueError: no data for [Atlantis]\n"
)
JSON_VALUE = {"city": "Paris", "temps": [11.5, 12.0, 9.25], "note": "crème brûlée"}
BYTES_VALUE = b"\x00\x01PNG\r\n\x1a\n\xff\xfe binary \x80"
#: Over the 16 KiB inline limit: kept as a file; shared by FULL and OLD_B (one file).
BIG_SHARED = bytes(range(256)) * 80  # 20 KiB
#: Only OLD_A has it: pruning OLD_A removes its file.
BIG_OLD = b"old run payload\n" * 2048  # 32 KiB


def zserve(*args: str) -> Any:
    return runner.invoke(app, list(args))


def open_store(home: Path) -> Store:
    return Store(f"sqlite:///{home}/zserve.db", artifact_dir=str(home / "artifacts"))


def file_of(home: Path, content: bytes) -> Path:
    sha = hashlib.sha256(content).hexdigest()
    return home / "artifacts" / sha[:2] / sha


def one_error_line(result: Any, *fragments: str) -> str:
    """Assert the house style of a failure: exit 2, nothing on stdout, one ``Error:`` line."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return result.stderr


def artifact(name: str, aid: str, *, value: Any = None, data: bytes | None = None) -> Artifact:
    if data is not None:
        content, kind = data, "application/octet-stream"
    else:
        content, kind = json.dumps(value, ensure_ascii=False).encode(), "application/json"
    return Artifact(
        artifact_id=aid, name=name, content_type=kind, size=len(content),
        sha256=hashlib.sha256(content).hexdigest(), value=value, data=data,
    )  # fmt: skip


@dataclass
class Recorded:
    home: Path
    a: str  # deployment ids
    b: str
    now: float


@pytest.fixture
def recorded(zhome: Path) -> Recorded:
    """Two deployments, ``a`` and ``b``, and four runs (newest first: FULL, FAILED, OLD_B,
    OLD_A)."""
    a = json.loads(zserve("deploy", WEATHER, "--name", "a", "--json").stdout)["deployment"]["id"]
    b = json.loads(zserve("deploy", WEATHER, "--name", "b", "--json").stdout)["deployment"]["id"]
    now = float(int(time.time()))
    t_full, t_failed = now - 30, now - 60
    records = [
        RunRecord(
            run_id=FULL, job_id="f0f0f0f0-0000-4000-8000-00000000000a", pipeline=PIPE,
            capture="full", deployment_id=b, status=JobStatus.COMPLETED,
            started_at=t_full, finished_at=t_full + 0.030, parameters={"city": "Paris"},
            metadata={"rows": 3},
            steps=[
                StepRun("fetch_data", StepStatus.COMPLETED, t_full + 0.001, 5.0,
                        outputs={"output": artifact("output", "a1", value=JSON_VALUE)}),
                StepRun("render", StepStatus.COMPLETED, t_full + 0.007, 10.0,
                        outputs={"output": artifact("output", "a2", data=BYTES_VALUE)}),
                StepRun("dump", StepStatus.COMPLETED, t_full + 0.007, 20.0,
                        outputs={"output": artifact("output", "a3", data=BIG_SHARED)}),
                StepRun("summarize", StepStatus.COMPLETED, t_full + 0.028, 2.0, output_size=12),
            ],
        ),
        RunRecord(
            run_id=FAILED, job_id="f1f1f1f1-0000-4000-8000-00000000000b", pipeline=PIPE,
            capture="metadata", deployment_id=a, status=JobStatus.FAILED,
            started_at=t_failed, finished_at=t_failed + 0.020, parameters={"city": "Atlantis"},
            error={"type": "ValueError", "message": "no data for [Atlantis]",
                   "step": "analyze_data"},
            steps=[
                StepRun("fetch_data", StepStatus.COMPLETED, t_failed + 0.002, 4.0, output_size=40),
                StepRun("analyze_data", StepStatus.FAILED, t_failed + 0.008, 12.0,
                        error={"type": "ValueError", "message": "no data for [Atlantis]",
                               "traceback": TRACEBACK}),
                StepRun("report", StepStatus.CANCELLED),
            ],
        ),
        RunRecord(
            run_id=OLD_B, job_id="f2f2f2f2-0000-4000-8000-00000000000c", pipeline=PIPE,
            capture="full", deployment_id=b, status=JobStatus.COMPLETED,
            started_at=now - 9 * DAY, finished_at=now - 9 * DAY + 1.0,
            steps=[StepRun("dump", StepStatus.COMPLETED, now - 9 * DAY, 900.0,
                           outputs={"output": artifact("output", "b1", data=BIG_SHARED)})],
        ),
        RunRecord(
            run_id=OLD_A, job_id="f3f3f3f3-0000-4000-8000-00000000000d", pipeline=PIPE,
            capture="full", deployment_id=a, status=JobStatus.COMPLETED,
            started_at=now - 10 * DAY, finished_at=now - 10 * DAY + 1.0, metadata={"k": "v"},
            steps=[
                StepRun("fetch_data", StepStatus.COMPLETED, now - 10 * DAY, 100.0,
                        outputs={"output": artifact("output", "c1", value=[1, 2])}),
                StepRun("dump", StepStatus.COMPLETED, now - 10 * DAY + 0.1, 800.0,
                        outputs={"output": artifact("output", "c2", data=BIG_OLD)}),
            ],
        ),
    ]  # fmt: skip
    with open_store(zhome) as s:
        s.add_runs(records)
    return Recorded(zhome, a, b, now)


def stored_ids(home: Path) -> list[str]:
    with open_store(home) as s:
        runs, _ = s.list_runs(limit=500)
    return [r.run_id for r in runs]


def rows_of(home: Path, run_id: str) -> dict[str, int]:
    """How many rows of each run table refer to ``run_id``."""
    with closing(sqlite3.connect(home / "zserve.db")) as db:
        counts = {}
        for table, col in (("runs", "id"), ("steps", "run_id"), ("artifacts", "run_id"),
                           ("run_metadata", "run_id")):  # fmt: skip
            query = f"SELECT count(*) FROM {table} WHERE {col} = ?"
            counts[table] = db.execute(query, [run_id]).fetchone()[0]
        return counts


# -- runs list ----------------------------------------------------------------------------------


def test_list_is_a_table_newest_first(recorded: Recorded) -> None:
    result = zserve("runs", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = ["RUN", "JOB", "PIPELINE", "CAPTURE", "STATUS", "STARTED", "DURATION"]
    assert lines[0].split() == header
    assert [line.split()[0] for line in lines[1:]] == [
        FULL[-8:],
        FAILED[-8:],
        OLD_B[-8:],
        OLD_A[-8:],
    ]
    full = lines[1]
    assert "f0f0f0f0" in full and "weather_pipeline" in full and "full" in full
    assert "completed" in full and "30.0 ms" in full
    assert "failed" in lines[2] and "metadata" in lines[2] and "20.0 ms" in lines[2]
    assert FULL not in result.stdout  # short ids only


def test_list_json_filters_and_limit(recorded: Recorded) -> None:
    doc = json.loads(zserve("runs", "list", "--json").stdout)
    assert doc["json_version"] == 1 and list(doc) == ["json_version", "runs"]
    assert [r["run_id"] for r in doc["runs"]] == [FULL, FAILED, OLD_B, OLD_A]
    full = doc["runs"][0]
    assert full["deployment_id"] == recorded.b and full["parameters"] == {"city": "Paris"}
    assert full["metadata"] == {"rows": 3} and full["duration_ms"] == 30.0
    assert [s["name"] for s in full["steps"]] == ["fetch_data", "render", "dump", "summarize"]
    assert "outputs" not in full["steps"][0]  # listings carry no artifacts
    failed = doc["runs"][1]
    assert failed["status"] == "failed" and failed["error"]["step"] == "analyze_data"
    assert "traceback" not in json.dumps(doc)

    def ids(*args: str) -> list[str]:
        result = zserve("runs", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return [r["run_id"] for r in json.loads(result.stdout)["runs"]]

    assert ids("--status", "failed") == [FAILED]
    assert ids("--status", "completed") == [FULL, OLD_B, OLD_A]
    assert ids("--status", "cancelled") == []
    assert ids("--deployment", "a") == [FAILED, OLD_A]
    assert ids("-d", recorded.b) == [FULL, OLD_B]
    assert ids("--deployment", "a", "--status", "completed") == [OLD_A]
    assert ids("--limit", "1") == [FULL]
    assert ids("-n", "3") == [FULL, FAILED, OLD_B]


def test_list_of_an_empty_store_says_how_to_record(zhome: Path) -> None:
    result = zserve("runs", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("No recorded runs: invoke with --capture metadata")
    assert json.loads(zserve("runs", "list", "--json").stdout) == {"json_version": 1, "runs": []}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--status", "done"), ("Unknown status 'done'", "completed, failed or cancelled")),
        (("--status", "running"), ("Unknown status 'running'",)),
        (("--deployment", "nope"), ("No deployment matches 'nope'",)),
        (("--limit", "0"), ("Invalid limit 0", "from 1 to 500")),
        (("--limit", "501"), ("Invalid limit 501",)),
    ],
)
def test_list_bad_options_are_one_error_line(
    recorded: Recorded, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    one_error_line(zserve("runs", "list", *args), *fragments)


# -- runs show ----------------------------------------------------------------------------------


def step_rows(text: str, *names: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        first = line.split(maxsplit=1)
        if first and first[0] in names and first[0] not in rows:
            rows[first[0]] = line
    assert set(rows) == set(names), text
    return rows


def test_show_draws_the_steps_as_a_timeline(recorded: Recorded) -> None:
    result = zserve("runs", "show", "abcd2222")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"run {FULL}  completed  capture full\n")
    assert f"deployment {recorded.b}" in out and "took 30.0 ms" in out
    assert "parameters {'city': 'Paris'}" in out and "metadata {'rows': 3}" in out
    rows = step_rows(out, "fetch_data", "render", "dump", "summarize")
    assert "+1.0 ms" in rows["fetch_data"] and "5.0 ms" in rows["fetch_data"]
    assert "+7.0 ms" in rows["render"] and "10.0 ms" in rows["render"]
    assert "+7.0 ms" in rows["dump"] and "20.0 ms" in rows["dump"]
    assert "+28.0 ms" in rows["summarize"] and "2.0 ms" in rows["summarize"]
    # The bars, 40 columns for the run's 30 ms: parallel steps start at the same column. (The
    # offsets keep clear of column boundaries, where float rounding could go either way.)
    column = next(line for line in out.splitlines() if "TIMELINE" in line).index("TIMELINE")
    bars = {name: (row.index("█") - column, row.count("█")) for name, row in rows.items()}
    assert bars == {"fetch_data": (1, 7), "render": (9, 13), "dump": (9, 27), "summarize": (37, 3)}
    json_size = len(json.dumps(JSON_VALUE, ensure_ascii=False).encode())
    assert f"output (application/json, {json_size} B)" in rows["fetch_data"]
    assert f"application/octet-stream, {len(BIG_SHARED)} B" in rows["dump"]
    assert "12 B (not captured)" in rows["summarize"]
    assert "raised:" not in out


def test_show_prints_a_failed_steps_traceback(recorded: Recorded) -> None:
    result = zserve("runs", "show", FAILED[:8])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"run {FAILED}  failed  capture metadata\n")
    assert "error ValueError: no data for [Atlantis]" in out
    rows = step_rows(out, "fetch_data", "analyze_data", "report")
    assert "failed" in rows["analyze_data"] and "+8.0 ms" in rows["analyze_data"]
    assert rows["report"].split()[:4] == ["report", "cancelled", "-", "-"]
    assert "40 B (not captured)" in rows["fetch_data"]
    assert f"analyze_data raised:\n{TRACEBACK}" in out  # verbatim: brackets are not markup


def test_show_json_is_the_run_document_with_the_traceback(recorded: Recorded) -> None:
    result = zserve("runs", "show", FAILED, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["json_version", "run"] and doc["json_version"] == 1
    run = doc["run"]
    assert run["run_id"] == FAILED and run["deployment_id"] == recorded.a
    assert run["status"] == "failed" and run["duration_ms"] == 20.0
    assert run["error"] == {
        "type": "ValueError", "message": "no data for [Atlantis]", "step": "analyze_data"
    }  # fmt: skip
    assert [s["status"] for s in run["steps"]] == ["completed", "failed", "cancelled"]
    assert run["steps"][1]["error"] == {
        "type": "ValueError", "message": "no data for [Atlantis]", "traceback": TRACEBACK
    }  # fmt: skip
    assert run["steps"][2]["started_at"] is None

    full = json.loads(zserve("runs", "show", "ABCD2222", "--json").stdout)["run"]
    outputs = full["steps"][0]["outputs"]["output"]
    assert outputs["value"] == JSON_VALUE and outputs["content_type"] == "application/json"
    assert "value" not in full["steps"][1]["outputs"]["output"]  # bytes are downloaded alone


def test_show_unknown_short_and_ambiguous_prefixes(recorded: Recorded) -> None:
    one_error_line(
        zserve("runs", "show", "ffff"), "No run id starts or ends with 'ffff'", "`zserve runs list`"
    )
    one_error_line(zserve("runs", "show", "abc"), "too short", "at least 4 characters")
    err = one_error_line(zserve("runs", "show", "abcd"), "matches several runs")
    assert FULL in err and FAILED in err and "Give more characters or the full id" in err
    assert OLD_A not in err


# -- runs artifact ------------------------------------------------------------------------------


def test_artifact_to_stdout_is_the_exact_bytes(recorded: Recorded) -> None:
    result = zserve("runs", "artifact", "abcd2222", "render")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == BYTES_VALUE
    result = zserve("runs", "artifact", "abcd2222", "fetch_data.output")
    assert json.loads(result.stdout_bytes) == JSON_VALUE


def test_artifact_to_a_file(recorded: Recorded, tmp_path: Path) -> None:
    target = tmp_path / "value.json"
    result = zserve("runs", "artifact", FULL, "fetch_data", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert json.loads(target.read_text(encoding="utf-8")) == JSON_VALUE
    assert f"Wrote {target.stat().st_size} bytes to {target}" in result.stderr

    big = tmp_path / "big.bin"
    result = zserve("runs", "artifact", "abcd2222", "dump", "--output", str(big))
    assert result.exit_code == 0, result.output
    assert file_of(recorded.home, BIG_SHARED).is_file()  # stored as a file, not inline
    assert big.read_bytes() == BIG_SHARED
    with open_store(recorded.home) as s:
        stored = s.get_run(FULL).steps[2].outputs["output"]  # type: ignore[index]
    assert stored.value is None and stored.data is None
    assert hashlib.sha256(big.read_bytes()).hexdigest() == stored.sha256


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ("abcd2222", "nope"),
            ("has no step 'nope'", "its steps are fetch_data, render, dump, summarize"),
        ),
        (("abcd2222", "summarize"), ("no captured output 'output'", "capture 'full'")),
        (("abcd2222", "render.other"), ("no captured output 'other'",)),
        (("abcd1111", "analyze_data"), ("no captured output 'output'",)),
        (("ffff", "render"), ("No run id starts or ends with 'ffff'",)),
        (("abcd", "render"), ("matches several runs",)),
    ],
)
def test_artifact_that_is_not_there_is_one_error_line(
    recorded: Recorded, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    one_error_line(zserve("runs", "artifact", *args), *fragments)


# -- runs prune ---------------------------------------------------------------------------------


def test_prune_dry_run_deletes_nothing(recorded: Recorded) -> None:
    result = zserve("runs", "prune", "--older-than", "7d", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Would delete 2 run(s) started before ")
    assert stored_ids(recorded.home) == [FULL, FAILED, OLD_B, OLD_A]
    assert file_of(recorded.home, BIG_OLD).is_file()
    doc = json.loads(zserve("runs", "prune", "--older-than", "1w", "--dry-run", "--json").stdout)
    assert doc == {"json_version": 1, "dry_run": True, "runs": [OLD_A, OLD_B], "count": 2}
    assert stored_ids(recorded.home) == [FULL, FAILED, OLD_B, OLD_A]


def test_prune_deletes_old_runs_their_rows_and_files(recorded: Recorded) -> None:
    home = recorded.home
    assert rows_of(home, OLD_A) == {"runs": 1, "steps": 2, "artifacts": 2, "run_metadata": 1}
    result = zserve("runs", "prune", "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Deleted 2 run(s) started before ")
    assert stored_ids(home) == [FULL, FAILED]
    for run_id in (OLD_A, OLD_B):
        assert rows_of(home, run_id) == {"runs": 0, "steps": 0, "artifacts": 0, "run_metadata": 0}
        with open_store(home) as s, pytest.raises(RunNotFound):
            s.get_run(run_id)
    assert not file_of(home, BIG_OLD).exists()
    # OLD_B's file is also FULL's: it stays, and FULL's artifact still downloads.
    assert file_of(home, BIG_SHARED).is_file()
    assert zserve("runs", "artifact", FULL, "dump").stdout_bytes == BIG_SHARED
    one_error_line(zserve("runs", "show", OLD_A[:8]), "No run id starts or ends with")

    again = json.loads(zserve("runs", "prune", "--older-than", "7d", "--json").stdout)
    assert again == {"json_version": 1, "dry_run": False, "runs": [], "count": 0}


def test_prune_of_one_deployment(recorded: Recorded) -> None:
    doc = json.loads(zserve("runs", "prune", "--older-than", "7d", "-d", "a", "--json").stdout)
    assert doc["runs"] == [OLD_A] and doc["count"] == 1
    assert stored_ids(recorded.home) == [FULL, FAILED, OLD_B]
    assert not file_of(recorded.home, BIG_OLD).exists()
    assert file_of(recorded.home, BIG_SHARED).is_file()
    # An age younger than every run: the recent ones of deployment b go too, a's stay.
    result = zserve("runs", "prune", "--older-than", "1s", "--deployment", "b")
    assert result.stdout.startswith("Deleted 2 run(s)")
    assert stored_ids(recorded.home) == [FAILED]
    assert not file_of(recorded.home, BIG_SHARED).exists()


@pytest.mark.parametrize("age", ["7x", "abc", "0d", "-3d", "", "inf", "nan"])
def test_prune_malformed_age_is_one_error_line(recorded: Recorded, age: str) -> None:
    one_error_line(
        zserve("runs", "prune", "--older-than", age),
        f"Invalid --older-than {age!r}",
        "90s, 15m, 12h, 7d or 2w",
    )
    assert stored_ids(recorded.home) == [FULL, FAILED, OLD_B, OLD_A]


def test_prune_of_an_unknown_deployment_deletes_nothing(recorded: Recorded) -> None:
    one_error_line(
        zserve("runs", "prune", "--older-than", "7d", "-d", "zz"), "No deployment matches 'zz'"
    )
    assert stored_ids(recorded.home) == [FULL, FAILED, OLD_B, OLD_A]


# -- output paths and names that once broke the command --------------------------------------


def test_artifact_to_an_unwritable_path_is_one_error_line(
    recorded: Recorded, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "out.bin"
    one_error_line(zserve("runs", "artifact", FULL, "render", "-o", str(target)), str(target))


def test_pipeline_names_are_shown_verbatim(zhome: Path) -> None:
    with open_store(zhome) as s:
        s.add_runs(
            [RunRecord(FULL, "j", "flow[v2]", "metadata", "d", JobStatus.COMPLETED, 1.0, 2.0)]
        )
    assert "flow[v2]" in zserve("runs", "list").stdout
    assert "pipeline flow[v2]" in zserve("runs", "show", FULL).stdout
