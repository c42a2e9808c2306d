"""Recorded runs in SQL: the rows of a batch of ``RunRecord``s, a run read back whole, listings
newest first with a cursor, run id prefixes, and the rows pruning removes.

Plain SQLAlchemy Core on a ``Connection`` the caller opened (``Store`` chooses the transaction,
writes artifact files and blobs, and translates errors); one multi-row INSERT per table per
batch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Engine, Row, Table, and_, delete, insert, or_, select, text

from zserve.errors import AmbiguousRun, NotFound, RunNotFound, UsageError
from zserve.pages import MAX_PAGE, cursor_of, position_of
from zserve.records import CAPTURE_MODES, ArtifactRecord, JobStatus, RunRecord, StepRun, StepStatus
from zserve.store import blobs
from zserve.store.artifacts import INLINE_MAX_BYTES, ORPHAN_GRACE_S, ArtifactFiles, content_of
from zserve.store.models import Artifact, Run, RunMetadata, RunStep

__all__ = [
    "ARTIFACT_COLUMNS",
    "MAX_LIST",
    "METADATA_COLUMNS",
    "MIN_RUN_PREFIX",
    "RUN_COLUMNS",
    "STEP_COLUMNS",
    "Batch",
    "build_batch",
    "delete_runs",
    "get_artifact",
    "get_run",
    "insert_batch",
    "list_runs",
    "lock_files",
    "old_runs",
    "referenced",
    "remove_unreferenced",
    "resolve_run",
]

#: The most runs one listing returns.
MAX_LIST = MAX_PAGE
#: A run id prefix must have at least this many characters.
MIN_RUN_PREFIX = 4
#: Ids per IN (...) list: well below every backend's limit on bound parameters.
_CHUNK = 500
#: How many candidates an ambiguous prefix lists.
_SHOWN = 5
#: Key of the PostgreSQL advisory lock between writers of artifact rows (shared) and the pruner
#: removing artifact files and blobs (exclusive). On SQLite the write lock plays that part.
_FILES_KEY = int.from_bytes(hashlib.sha256(b"zserve.store.artifacts").digest()[:8], "big") >> 1

RUNS = cast(Table, Run.__table__)
STEPS = cast(Table, RunStep.__table__)
ARTIFACTS = cast(Table, Artifact.__table__)
METADATA = cast(Table, RunMetadata.__table__)

_LIST_HINT = "`zserve runs list` shows the recorded runs"


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# -- writing ------------------------------------------------------------------------------------

#: The columns a batch fills, in the order of its row tuples.
RUN_COLUMNS = (
    "id", "job_id", "deployment_id", "pipeline", "capture", "status", "started_at",
    "finished_at", "duration_ms", "parameters", "error",
)  # fmt: skip
STEP_COLUMNS = (
    "run_id", "position", "name", "status", "started_at", "duration_ms", "error", "output_size",
)  # fmt: skip
ARTIFACT_COLUMNS = (
    "id", "run_id", "step_position", "name", "content_type", "size", "sha256", "value", "data",
    "path", "blob", "truncated", "loadable",
)  # fmt: skip
METADATA_COLUMNS = ("run_id", "key", "position", "value")


@dataclass
class Batch:
    """The rows of a batch of runs (tuples in the order of ``*_COLUMNS``), the artifact files
    they point at (relative path -> content), already written, and the blobs they point at
    (SHA-256 -> content), to store in the rows' transaction."""

    runs: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[tuple[Any, ...]] = field(default_factory=list)
    artifacts: list[tuple[Any, ...]] = field(default_factory=list)
    metadata: list[tuple[Any, ...]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def tables(self) -> Iterator[tuple[Table, tuple[str, ...], list[tuple[Any, ...]]]]:
        """(table, columns, rows) of each table with rows, parents first."""
        for table, columns, rows in (
            (RUNS, RUN_COLUMNS, self.runs),
            (STEPS, STEP_COLUMNS, self.steps),
            (ARTIFACTS, ARTIFACT_COLUMNS, self.artifacts),
            (METADATA, METADATA_COLUMNS, self.metadata),
        ):  # fmt: skip
            if rows:
                yield table, columns, rows


def build_batch(records: Sequence[RunRecord], files: ArtifactFiles) -> Batch:
    """The rows of ``records``; contents over the inline limit are written to files first, or
    kept for the database (``batch.blobs``) when there is no artifact directory."""
    batch = Batch()
    runs, steps = batch.runs.append, batch.steps.append
    for r in records:
        if r.started_at is None:
            raise ValueError(f"Run {r.run_id} has no start time: only started runs are recorded")
        run_id = r.run_id
        runs((
            run_id, r.job_id, r.deployment_id, r.pipeline, r.capture, r.status.value,
            r.started_at, r.finished_at, r.duration_ms, r.parameters, r.error,
        ))  # fmt: skip
        for position, s in enumerate(r.steps):
            steps((
                run_id, position, s.name, s.status.value, s.started_at, s.duration_ms, s.error,
                s.output_size,
            ))  # fmt: skip
            if s.outputs:
                for a in s.outputs.values():
                    batch.artifacts.append(_artifact_row(run_id, position, a, files, batch))
        if r.metadata:
            for position, (key, value) in enumerate(r.metadata.items()):
                batch.metadata.append((run_id, key, position, value))
    return batch


def _artifact_row(
    run_id: str, position: int, a: ArtifactRecord, files: ArtifactFiles, batch: Batch
) -> tuple[Any, ...]:
    value, data, path, blob = (a.value if a.data is None else None), a.data, None, None
    content = content_of(a)
    if len(content) > INLINE_MAX_BYTES:
        if files.root is None:
            blob = blobs.digest(content)
            batch.blobs[blob] = content
        else:
            path = files.put(content)
            batch.files[path] = content
        value = data = None
    return (
        a.artifact_id, run_id, position, a.name, a.content_type, a.size, a.sha256, value, data,
        path, blob, a.truncated, a.loadable,
    )  # fmt: skip


def insert_batch(conn: Connection, batch: Batch) -> None:
    """One multi-row INSERT per table, parents first, through SQLAlchemy (PostgreSQL; SQLite
    writes go to the driver straight: ``raw.insert_rows``)."""
    for table, columns, rows in batch.tables():
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


# -- reading ------------------------------------------------------------------------------------


def _run(row: Row[Any]) -> RunRecord:
    return RunRecord(
        run_id=row.id, job_id=row.job_id, pipeline=row.pipeline, capture=row.capture,
        deployment_id=row.deployment_id, status=JobStatus(row.status),
        started_at=row.started_at, finished_at=row.finished_at,
        parameters=row.parameters, error=row.error,
    )  # fmt: skip


def _step(row: Row[Any]) -> StepRun:
    return StepRun(
        name=row.name, status=StepStatus(row.status), started_at=row.started_at,
        duration_ms=row.duration_ms, error=row.error, output_size=row.output_size,
    )  # fmt: skip


def _artifact(row: Row[Any]) -> ArtifactRecord:
    """An artifact kept in a file or a blob comes back with neither ``value`` nor ``data``."""
    return ArtifactRecord(
        artifact_id=row.id, name=row.name, content_type=row.content_type, size=row.size,
        sha256=row.sha256, value=row.value, data=row.data, truncated=row.truncated,
        loadable=row.loadable, in_file=row.path is not None or row.blob is not None,
    )  # fmt: skip


def _fill(conn: Connection, records: list[RunRecord]) -> None:
    """Add their steps and metadata (no artifacts) to ``records``."""
    by_id = {r.run_id: r for r in records}
    for ids in _chunks(list(by_id)):
        query = select(STEPS).where(STEPS.c.run_id.in_(ids))
        for row in conn.execute(query.order_by(STEPS.c.run_id, STEPS.c.position)):
            by_id[row.run_id].steps.append(_step(row))
        query = select(METADATA).where(METADATA.c.run_id.in_(ids))
        for row in conn.execute(query.order_by(METADATA.c.run_id, METADATA.c.position)):
            record = by_id[row.run_id]
            if record.metadata is None:
                record.metadata = {}
            record.metadata[row.key] = row.value


def get_run(conn: Connection, run_id: str) -> RunRecord:
    row = conn.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    if row is None:
        raise RunNotFound(f"No run {run_id!r}: {_LIST_HINT}")
    record = _run(row)
    _fill(conn, [record])
    query = select(ARTIFACTS).where(ARTIFACTS.c.run_id == run_id).order_by(ARTIFACTS.c.name)
    for a in conn.execute(query):
        step = record.steps[a.step_position]
        if step.outputs is None:
            step.outputs = {}
        step.outputs[a.name] = _artifact(a)
    return record


def get_artifact(
    conn: Connection, run_id: str, artifact_id: str
) -> tuple[ArtifactRecord, str | None, str | None]:
    """The artifact, the relative path of its file and the address of its blob (both None when
    it is inline)."""
    query = select(ARTIFACTS).where(ARTIFACTS.c.id == artifact_id, ARTIFACTS.c.run_id == run_id)
    row = conn.execute(query).first()
    if row is not None:
        return _artifact(row), row.path, row.blob
    if conn.execute(select(RUNS.c.id).where(RUNS.c.id == run_id)).first() is None:
        raise RunNotFound(f"No run {run_id!r}: {_LIST_HINT}")
    raise NotFound(
        f"Run {run_id} has no artifact {artifact_id!r}: `zserve runs show {run_id}` shows "
        "the captured outputs of its steps"
    )


def _cursor(row: Row[Any]) -> str:
    return cursor_of(row.started_at, row.id)


def list_runs(
    conn: Connection,
    *,
    deployment_id: str | None = None,
    status: str | None = None,
    capture: str | None = None,
    since: float | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[RunRecord], str | None]:
    """Runs newest first with their steps and metadata but no artifacts, and the cursor of the
    next page (None on the last one)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise UsageError(f"Invalid limit {limit!r}: it must be from 1 to {MAX_LIST}")
    query = select(RUNS)
    if deployment_id is not None:
        query = query.where(RUNS.c.deployment_id == deployment_id)
    if status is not None:
        known = [str(s) for s in JobStatus]
        if status not in known:
            raise UsageError(f"Unknown run status {status!r}: use one of {', '.join(known)}")
        query = query.where(RUNS.c.status == str(status))
    if capture is not None:
        if capture not in CAPTURE_MODES:
            modes = ", ".join(CAPTURE_MODES)
            raise UsageError(f"Unknown capture mode {capture!r}: use one of {modes}")
        query = query.where(RUNS.c.capture == capture)
    if since is not None:
        query = query.where(RUNS.c.started_at >= since)
    if cursor is not None:
        at, run_id = position_of(cursor)
        query = query.where(
            or_(RUNS.c.started_at < at, and_(RUNS.c.started_at == at, RUNS.c.id < run_id))
        )
    query = query.order_by(RUNS.c.started_at.desc(), RUNS.c.id.desc()).limit(limit + 1)
    rows = conn.execute(query).all()
    page = [_run(row) for row in rows[:limit]]
    _fill(conn, page)
    return page, (_cursor(rows[limit - 1]) if len(rows) > limit else None)


def resolve_run(conn: Connection, prefix: str) -> str:
    """The full id of the one run whose id is, starts with or ends with ``prefix`` (run ids
    are time-ordered: their last characters tell apart runs of the same moment)."""
    wanted = prefix.strip()
    if conn.execute(select(RUNS.c.id).where(RUNS.c.id == wanted)).first() is not None:
        return wanted
    wanted = wanted.lower()  # run ids are lower-case uuids
    if len(wanted) < MIN_RUN_PREFIX:
        raise UsageError(
            f"Run id prefix {prefix!r} is too short: give at least {MIN_RUN_PREFIX} characters"
        )
    query = (
        select(RUNS.c.id)
        .where(
            or_(
                RUNS.c.id.startswith(wanted, autoescape=True),
                RUNS.c.id.endswith(wanted, autoescape=True),
            )
        )
        .order_by(RUNS.c.started_at.desc(), RUNS.c.id)
    )
    # LIKE ignores case on SQLite: keep exact prefixes only.
    found: list[str] = []
    for (run_id,) in conn.execute(query):
        if run_id.startswith(wanted) or run_id.endswith(wanted):
            found.append(run_id)
            if len(found) > _SHOWN:
                break
    if not found:
        raise RunNotFound(f"No run id starts or ends with {prefix!r}: {_LIST_HINT}")
    if len(found) > 1:
        shown = ", ".join(found[:_SHOWN]) + (", ..." if len(found) > _SHOWN else "")
        raise AmbiguousRun(
            f"Run id prefix {prefix!r} matches several runs: {shown}. Give more characters "
            "or the full id"
        )
    return found[0]


# -- pruning ------------------------------------------------------------------------------------


def old_runs(conn: Connection, older_than: float, deployment_id: str | None) -> list[str]:
    """Ids of the runs started before ``older_than`` (of one deployment), oldest first."""
    query = select(RUNS.c.id).where(RUNS.c.started_at < older_than)
    if deployment_id is not None:
        query = query.where(RUNS.c.deployment_id == deployment_id)
    return list(conn.execute(query.order_by(RUNS.c.started_at, RUNS.c.id)).scalars())


def delete_runs(conn: Connection, run_ids: Sequence[str]) -> tuple[set[str], set[str]]:
    """Delete the runs with their steps, artifacts and metadata; the artifact files (relative
    paths) and the blobs (addresses) their rows pointed at."""
    paths: set[str] = set()
    shas: set[str] = set()
    for ids in _chunks(run_ids):
        query = select(ARTIFACTS.c.path, ARTIFACTS.c.blob).where(
            ARTIFACTS.c.run_id.in_(ids),
            or_(ARTIFACTS.c.path.is_not(None), ARTIFACTS.c.blob.is_not(None)),
        )
        for path, blob in conn.execute(query.distinct()):
            if path is not None:
                paths.add(path)
            if blob is not None:
                shas.add(blob)
        for table in (METADATA, ARTIFACTS, STEPS):
            conn.execute(delete(table).where(table.c.run_id.in_(ids)))
        conn.execute(delete(RUNS).where(RUNS.c.id.in_(ids)))
    return paths, shas


def referenced(conn: Connection, paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` that an artifact row still points at."""
    found: set[str] = set()
    for chunk in _chunks(paths):
        query = select(ARTIFACTS.c.path).where(ARTIFACTS.c.path.in_(chunk)).distinct()
        found.update(conn.execute(query).scalars())
    return found


def lock_files(conn: Connection, *, exclusive: bool) -> None:
    """Writers of artifact rows (shared) against the pruner removing files (exclusive), for the
    rest of the transaction. On SQLite, the write lock held since BEGIN IMMEDIATE does it."""
    if conn.dialect.name == "postgresql":
        lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn.execute(text(f"SELECT {lock}(:key)"), {"key": _FILES_KEY})


def remove_unreferenced(writer: Engine, files: ArtifactFiles, paths: set[str]) -> None:
    """Remove the files of ``paths``, and the orphans older than ``ORPHAN_GRACE_S`` (what a
    crash between deleting rows and removing files left), that no artifact row refers to."""
    if files.root is None:
        return  # files other stores wrote stay until a store with the directory prunes
    orphans, temporary = files.old_files(time.time() - ORPHAN_GRACE_S)
    for tmp in temporary:
        tmp.unlink(missing_ok=True)
    candidates = sorted(paths.union(orphans))
    if not candidates:
        return
    with writer.begin() as conn:  # writers wait: none can refer to a file meanwhile
        lock_files(conn, exclusive=True)
        keep = referenced(conn, candidates)
        files.remove(path for path in candidates if path not in keep)
