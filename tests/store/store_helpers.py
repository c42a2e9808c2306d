"""Helpers for the store tests, importable by name in spawned child processes."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import queue
import shutil
import sqlite3
import subprocess
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import to_json
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from zserve.records import ArtifactRecord, JobStatus, RunRecord, StepRun, StepStatus
from zserve.store import Store
from zserve.store.schema import configure_sqlite


def deployment_args(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``Store.add_deployment`` for a plausible deployment."""
    args: dict[str, Any] = {
        "name": "weather",
        "source": "zserve.examples.weather:weather_pipeline",
        "import_root": "/srv/app",
        "pipeline_name": "weather_pipeline",
        "code_hash": "a" * 64,
        "file_hashes": {"/srv/app/zserve/examples/weather.py": "b" * 64},
        "spec": {
            "steps": [{"name": "fetch_data", "inputs": ["city"], "outputs": ["output"]}],
            "parameters": {"city": {"type": "str", "required": True}},
            "outputs": ["output"],
        },
        "settings": {"capture": "none"},
        "capture_default": "none",
    }
    args.update(overrides)
    return args


# -- run in child processes (multiprocessing, spawn) ---------------------------------------------


def _child(
    fn: Callable[..., Any],
    results: Any,
    barrier: Any,
    index: int,
    args: tuple[Any, ...],
) -> None:
    try:
        barrier.wait(timeout=60)
        results.put((index, "ok", fn(*args)))
    except BaseException:
        results.put((index, "error", traceback.format_exc()))
        raise


def run_in_processes(
    fn: Callable[..., Any], args_list: Sequence[tuple[Any, ...]], timeout: float = 90.0
) -> list[Any]:
    """Run ``fn(*args)`` in one spawned process per ``args``, all released at once by a barrier.

    Returns the results in order; fails with the child's traceback when one raised.
    """
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    barrier = ctx.Barrier(len(args_list))
    procs = [
        ctx.Process(target=_child, args=(fn, results, barrier, i, args))
        for i, args in enumerate(args_list)
    ]
    for proc in procs:
        proc.start()
    collected: dict[int, Any] = {}
    errors: list[str] = []
    try:
        for _ in procs:
            try:
                index, status, value = results.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("a child process did not report in time") from None
            if status == "ok":
                collected[index] = value
            else:
                errors.append(value)
    finally:
        for proc in procs:
            proc.join(timeout=timeout)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert not errors, "\n".join(errors)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return [collected[i] for i in range(len(procs))]


def open_store(url: str) -> tuple[bool, str | None]:
    with Store(url) as store:
        return store.migrated, store.current_revision()


def add_versions(url: str, name: str, code_hashes: Sequence[str]) -> list[tuple[str, int, bool]]:
    out = []
    with Store(url) as store:
        for code_hash in code_hashes:
            record, created = store.add_deployment(
                **deployment_args(name=name, code_hash=code_hash)
            )
            out.append((record.id, record.version, created))
    return out


# -- recorded runs ----------------------------------------------------------------------------

#: A fixed start time (2025-11-29), so that listings order predictably.
T0 = 1_764_400_000.0


def json_artifact(value: Any, *, name: str = "output", truncated: bool = False) -> ArtifactRecord:
    """An artifact of a JSON value, measured and hashed as the recorder does."""
    text = to_json(value)  # the encoding the recorder hashes
    return ArtifactRecord(
        artifact_id=str(uuid.uuid4()), name=name, content_type="application/json",
        size=len(text), sha256=hashlib.sha256(text).hexdigest(), value=value,
        truncated=truncated, loadable=not truncated,
    )  # fmt: skip


def bytes_artifact(data: bytes, *, name: str = "output") -> ArtifactRecord:
    return ArtifactRecord(
        artifact_id=str(uuid.uuid4()), name=name, content_type="application/octet-stream",
        size=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data,
    )  # fmt: skip


def run_record(
    started_at: float = T0,
    *,
    run_id: str | None = None,
    status: JobStatus = JobStatus.COMPLETED,
    capture: str = "full",
    deployment_id: str = "dep-1",
    outputs: dict[str, Any] | None = None,
) -> RunRecord:
    """A plausible recorded run of three steps. ``outputs``: step name -> artifact (or None),
    replacing the default small JSON outputs of ``fetch`` and ``pack``."""
    failed = status is JobStatus.FAILED
    default: dict[str, Any] = {
        "fetch": json_artifact({"city": "Paris", "temp": 21.5, "ok": True, "note": "é"}),
        "pack": bytes_artifact(b"\x00\x01\x02\xff"),
    }
    if outputs:
        default.update(outputs)
    steps = []
    for i, name in enumerate(("fetch", "pack", "report")):
        step = StepRun(name, StepStatus.COMPLETED, started_at + i * 0.01, 1.5 + i)
        artifact = default.get(name)
        if artifact is not None:
            step.outputs = {artifact.name: artifact}
        steps.append(step)
    steps[2].output_size = 12
    if failed:
        steps[2].status = StepStatus.FAILED
        steps[2].output_size = None
        steps[2].error = {"type": "ValueError", "message": "boom", "traceback": "Traceback..."}
    return RunRecord(
        run_id=run_id or str(uuid.uuid4()), job_id=str(uuid.uuid4()), pipeline="weather",
        capture=capture, deployment_id=deployment_id, status=status,
        started_at=started_at, finished_at=started_at + 0.123456789,
        parameters={"city": "Paris", "days": 3, "api_key": "[REDACTED]"},
        metadata={"zeta": 1, "alpha": {"nested": [1, 2]}, "source": "test"},
        error={"type": "StepFailed", "message": "boom", "step": "report"} if failed else None,
        steps=steps,
    )  # fmt: skip


def write_runs(url: str, artifact_dir: str, seconds: float, batch: int, big: bytes) -> list[str]:
    """Add batches of runs for ``seconds`` (each run has an artifact of ``big``); their ids."""
    written: list[str] = []
    deadline = time.monotonic() + seconds
    with Store(url, artifact_dir=artifact_dir) as store:
        while time.monotonic() < deadline:
            records = [
                run_record(T0 + len(written) + i, outputs={"report": bytes_artifact(big)})
                for i in range(batch)
            ]
            store.add_runs(records)
            written += [r.run_id for r in records]
    return written


def prune_runs_for(url: str, seconds: float) -> int:
    """Prune every run (all are older than now) again and again for ``seconds``: how many."""
    pruned = 0
    deadline = time.monotonic() + seconds
    with Store(url) as store:
        while time.monotonic() < deadline:
            pruned += len(store.prune_runs(time.time()))
    return pruned


def write_or_prune(kind: str, *args: Any) -> Any:
    """``write_runs(*args)`` or ``prune_runs_for(*args)``: one function for ``run_in_processes``."""
    return write_runs(*args) if kind == "write" else prune_runs_for(*args)


def switch_to_wal(directory: str, rounds: int, barrier: Any) -> int:
    """Connect to ``rounds`` fresh files, all processes at once for each (``configure_sqlite``,
    which switches the file to WAL)."""
    for n in range(rounds):
        barrier.wait(timeout=10)
        conn = sqlite3.connect(Path(directory) / f"{n}.db")
        try:
            configure_sqlite(conn, None)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            conn.close()
    return rounds


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` read-only for this very process, for real (or the test is skipped)."""
    mode = path.stat().st_mode
    path.chmod(0o555 if path.is_dir() else 0o444)
    immutable = False
    try:
        if os.access(path, os.W_OK):  # root: permissions do not stop it
            chattr = shutil.which("chattr")
            done = chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True)
            if not done or done.returncode != 0:
                pytest.skip("running as root and chattr +i is not available: nothing makes a "
                            "file read-only for this process")  # fmt: skip
            immutable = True
            assert not os.access(path, os.W_OK)
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)


@contextmanager
def own_engine(url: str) -> Iterator[Engine]:
    """A connection pool of the test's own, not the store's."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
