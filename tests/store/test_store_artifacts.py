"""Artifacts over the inline limit live in files named by their SHA-256, shared by identical
contents; pruning removes rows first, then the files no row refers to, and orphans a crash left."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from pydantic_core import to_json
from sqlalchemy import text
from store_backends import POSTGRESQL
from store_helpers import T0, bytes_artifact, json_artifact, run_record

import zserve.store.runs as runs_module
from zserve.errors import RunNotFound, StoreUnavailable
from zserve.records import RunRecord
from zserve.store import Store
from zserve.store.artifacts import INLINE_MAX_BYTES, ORPHAN_GRACE_S, ArtifactFiles
from zserve.store.schema import SCHEMA_HEAD, alembic_config

BIG = bytes(range(256)) * 80  # 20 KiB
BIG_VALUE = {"rows": [{"n": n, "text": "é" * 20} for n in range(400)]}


def _file(root: Path, content: bytes) -> Path:
    sha = hashlib.sha256(content).hexdigest()
    return root / sha[:2] / sha


def _rel(root: Path, content: bytes) -> str:
    return str(_file(root, content).relative_to(root))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    return tmp_path / "artifact-files"


@pytest.fixture
def fstore(store_url: str, artifact_dir: Path) -> Iterator[Store]:
    with Store(store_url, artifact_dir=str(artifact_dir)) as opened:
        yield opened


def test_large_contents_are_files_named_by_sha256_and_identical_ones_share_one(
    fstore: Store, artifact_dir: Path
) -> None:
    first = run_record(T0, outputs={"fetch": json_artifact(BIG_VALUE), "pack": bytes_artifact(BIG)})
    second = run_record(T0 + 1, outputs={"pack": bytes_artifact(BIG)})
    fstore.add_runs([first])
    fstore.add_runs([second])

    json_text = to_json(BIG_VALUE)
    assert _file(artifact_dir, json_text).read_bytes() == json_text
    assert _file(artifact_dir, BIG).read_bytes() == BIG
    assert len(_files(artifact_dir)) == 2  # three artifacts, two contents
    with fstore.engine.connect() as conn:
        paths = conn.execute(text("SELECT path FROM artifacts WHERE path IS NOT NULL")).scalars()
        assert sorted(paths) == sorted(
            [_rel(artifact_dir, content) for content in (json_text, BIG, BIG)]
        )
        inline = conn.execute(text("SELECT count(*) FROM artifacts WHERE path IS NULL")).scalar()
        assert inline == 1  # second's small fetch output

    back = fstore.get_run(first.run_id)
    for i in (0, 1):
        stored = back.steps[i].outputs["output"]  # type: ignore[index]
        original = first.steps[i].outputs["output"]  # type: ignore[index]
        assert stored.value is None and stored.data is None  # in a file: not in the record
        assert (stored.artifact_id, stored.size, stored.sha256, stored.content_type) == (
            original.artifact_id, original.size, original.sha256, original.content_type,
        )  # fmt: skip
        artifact, content = fstore.read_artifact(first.run_id, original.artifact_id)
        assert hashlib.sha256(content).hexdigest() == original.sha256 == artifact.sha256
    fetch_id = first.steps[0].outputs["output"].artifact_id  # type: ignore[index]
    assert json.loads(fstore.read_artifact(first.run_id, fetch_id)[1]) == BIG_VALUE


def test_the_inline_limit_is_16_kib_of_content(fstore: Store, artifact_dir: Path) -> None:
    at_limit = bytes_artifact(b"a" * INLINE_MAX_BYTES)
    over = bytes_artifact(b"b" * (INLINE_MAX_BYTES + 1))
    record = run_record(outputs={"fetch": at_limit, "pack": over})
    fstore.add_runs([record])
    assert INLINE_MAX_BYTES == 16 * 1024
    assert _files(artifact_dir) == {_rel(artifact_dir, b"b" * (INLINE_MAX_BYTES + 1))}
    back = fstore.get_run(record.run_id)
    assert back.steps[0].outputs["output"].data == at_limit.data  # type: ignore[index]


def test_sqlite_keeps_artifacts_beside_the_database_by_default(
    store_url: str, store_backend: str
) -> None:
    with Store(store_url) as store:
        record = run_record(outputs={"pack": bytes_artifact(BIG)})
        store.add_runs([record])
        if store_backend == POSTGRESQL:  # no directory: in the database (test_store_blobs.py)
            assert store.artifact_dir is None
            assert _count(store, "artifact_blobs") == 1
            return
        assert _count(store, "artifact_blobs") == 0
    default = Path(store_url.removeprefix("sqlite:///")).parent / "artifacts"
    assert _file(default, BIG).read_bytes() == BIG


def test_a_missing_or_damaged_file_is_a_clear_error(fstore: Store, artifact_dir: Path) -> None:
    record = run_record(outputs={"pack": bytes_artifact(BIG)})
    fstore.add_runs([record])
    artifact_id = record.steps[1].outputs["output"].artifact_id  # type: ignore[index]
    path = _file(artifact_dir, BIG)
    path.write_bytes(b"something else")
    with pytest.raises(StoreUnavailable, match=r"is damaged: the SHA-256 of .* does not match"):
        fstore.read_artifact(record.run_id, artifact_id)
    path.unlink()
    with pytest.raises(StoreUnavailable, match=f"missing: {path} does not exist.*ZSERVE_ARTIFACT"):
        fstore.read_artifact(record.run_id, artifact_id)


def test_a_row_cannot_name_a_file_outside_the_artifact_directory(
    fstore: Store, artifact_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not an artifact")
    record = run_record(outputs={"pack": bytes_artifact(BIG)})
    fstore.add_runs([record])
    artifact_id = record.steps[1].outputs["output"].artifact_id  # type: ignore[index]
    with fstore.engine.begin() as conn:
        conn.execute(text("UPDATE artifacts SET path = '../secret' WHERE path IS NOT NULL"))
    with pytest.raises(StoreUnavailable, match=r"invalid file '\.\./secret'"):
        fstore.read_artifact(record.run_id, artifact_id)
    fstore.prune_runs(T0 + 1)
    assert secret.exists()


def test_a_file_pruned_between_its_write_and_the_insert_is_written_again(
    fstore: Store, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put = ArtifactFiles.put

    def put_then_lose(self: ArtifactFiles, content: bytes) -> str:
        path = put(self, content)
        (artifact_dir / path).unlink()  # what a concurrent prune may do before the rows exist
        return path

    monkeypatch.setattr(ArtifactFiles, "put", put_then_lose)
    record = run_record(outputs={"pack": bytes_artifact(BIG)})
    fstore.add_runs([record])
    assert _file(artifact_dir, BIG).read_bytes() == BIG


def _three_runs() -> list[RunRecord]:
    shared = bytes_artifact(BIG)
    return [
        run_record(T0, outputs={"pack": shared, "fetch": bytes_artifact(BIG + b"old")}),
        run_record(T0 + 10, deployment_id="dep-2", outputs={"pack": bytes_artifact(BIG)}),
        run_record(T0 + 20, outputs={"fetch": bytes_artifact(BIG + b"new")}),
    ]


def test_prune_deletes_old_runs_rows_first_then_unreferenced_files(
    fstore: Store, artifact_dir: Path
) -> None:
    old, other, new = _three_runs()
    fstore.add_runs([old, other, new])
    assert len(_files(artifact_dir)) == 3
    tables = ("runs", "steps", "artifacts", "run_metadata")
    before = {table: _count(fstore, table) for table in tables}

    assert fstore.prune_runs(T0 + 15, dry_run=True) == [old.run_id, other.run_id]
    assert {table: _count(fstore, table) for table in tables} == before
    assert len(_files(artifact_dir)) == 3

    assert fstore.prune_runs(T0 + 15, deployment_id="dep-1") == [old.run_id]
    with pytest.raises(RunNotFound):
        fstore.get_run(old.run_id)
    assert {table: _count(fstore, table) for table in tables} == {
        "runs": 2, "steps": 6, "artifacts": before["artifacts"] - 2, "run_metadata": 6,
    }  # fmt: skip
    # BIG is still referenced by the dep-2 run; BIG + b"old" is gone.
    assert not _file(artifact_dir, BIG + b"old").exists()
    assert _file(artifact_dir, BIG).exists()

    assert fstore.prune_runs(T0 + 15) == [other.run_id]
    assert _files(artifact_dir) == {_rel(artifact_dir, BIG + b"new")}
    assert fstore.get_run(new.run_id).run_id == new.run_id
    assert fstore.prune_runs(T0 + 15) == []


def test_prune_sweeps_old_orphans_a_crash_left(
    fstore: Store, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, other, new = _three_runs()
    fstore.add_runs([old, other, new])

    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # the process dies after the rows went, before the files

    monkeypatch.setattr(runs_module, "remove_unreferenced", crash)
    with pytest.raises(KeyboardInterrupt):
        fstore.prune_runs(T0 + 15)
    monkeypatch.undo()
    orphan = _file(artifact_dir, BIG + b"old")
    assert orphan.exists() and _count(fstore, "runs") == 1

    young = _file(artifact_dir, b"x" * 20_000)  # an orphan younger than the grace period
    young.parent.mkdir(parents=True, exist_ok=True)
    young.write_bytes(b"x" * 20_000)
    stale_tmp = orphan.with_name(".tmp-0123")
    stale_tmp.write_bytes(b"half written")
    unrelated = artifact_dir / "README"
    unrelated.write_text("not ours")
    for path in (orphan, _file(artifact_dir, BIG), stale_tmp, unrelated):
        _age(path, ORPHAN_GRACE_S + 5)

    assert fstore.prune_runs(T0 + 15) == []
    assert not orphan.exists() and not _file(artifact_dir, BIG).exists()
    assert not stale_tmp.exists()
    assert young.exists() and unrelated.exists()
    assert _file(artifact_dir, BIG + b"new").exists()  # still referenced by `new`
    new_id = new.steps[0].outputs["output"].artifact_id  # type: ignore[index]
    assert fstore.read_artifact(new.run_id, new_id)[1] == BIG + b"new"


def test_files_recorded_before_blobs_existed_are_read_after_the_upgrade(
    store_url: str, artifact_dir: Path
) -> None:
    record = run_record(outputs={"pack": bytes_artifact(BIG)})
    with Store(store_url, artifact_dir=str(artifact_dir)) as store:
        store.add_runs([record])
    command.downgrade(alembic_config(store_url), "0003")  # what the zserve before blobs left
    with Store(store_url, artifact_dir=str(artifact_dir)) as store:
        assert store.migrated and store.current_revision() == SCHEMA_HEAD
        artifact_id = record.steps[1].outputs["output"].artifact_id  # type: ignore[index]
        assert store.read_artifact(record.run_id, artifact_id)[1] == BIG
        assert _count(store, "artifact_blobs") == 0
