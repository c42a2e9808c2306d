"""A PostgreSQL store with no artifact directory keeps artifacts over the inline limit in the
database (``artifact_blobs``), once per content, read back by any process that opens the store,
and deleted by pruning once no artifact refers to them, also while writers add runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_core import to_json
from sqlalchemy import make_url, text
from store_helpers import (
    T0,
    bytes_artifact,
    json_artifact,
    run_in_processes,
    run_record,
    write_or_prune,
)

from zserve.errors import RunNotFound, StoreUnavailable
from zserve.records import RunRecord
from zserve.store import Store
from zserve.store.artifacts import INLINE_MAX_BYTES

pytestmark = pytest.mark.postgresql

BIG = bytes(range(256)) * 80  # 20 KiB
BIG_VALUE = {"rows": [{"n": n, "text": "é" * 20} for n in range(400)]}


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    with Store(postgres_url) as opened:
        assert opened.artifact_dir is None
        yield opened


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _rows(store: Store, sql: str) -> list[tuple[object, ...]]:
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql))]


def _blobs(store: Store) -> dict[str, int]:
    return dict(_rows(store, "SELECT sha256, size FROM artifact_blobs"))  # type: ignore[arg-type]


def _artifact_id(record: RunRecord, step: int) -> str:
    return record.steps[step].outputs["output"].artifact_id  # type: ignore[index]


def test_large_contents_are_blobs_kept_once_and_read_back_by_another_store(
    store: Store, postgres_url: str
) -> None:
    first = run_record(T0, outputs={"fetch": json_artifact(BIG_VALUE), "pack": bytes_artifact(BIG)})
    second = run_record(T0 + 1, outputs={"pack": bytes_artifact(BIG)})
    third = run_record(T0 + 2, outputs={"pack": bytes_artifact(BIG)})
    store.add_runs([first])
    store.add_runs([second, third])  # the same content twice in one batch, and stored already

    json_text = to_json(BIG_VALUE)
    assert _blobs(store) == {_sha(json_text): len(json_text), _sha(BIG): len(BIG)}
    refs = _rows(store, "SELECT blob, path, value IS NULL, data IS NULL FROM artifacts "
                        "WHERE blob IS NOT NULL ORDER BY blob")  # fmt: skip
    assert sorted(r[0] for r in refs) == sorted([_sha(json_text)] + [_sha(BIG)] * 3)
    assert {r[1:] for r in refs} == {(None, True, True)}  # no file, nothing inline

    with Store(postgres_url) as other:  # as another host would: the same database, no files
        back = other.get_run(first.run_id)
        for step in (0, 1):
            stored = back.steps[step].outputs["output"]  # type: ignore[index]
            assert stored.value is None and stored.data is None and stored.in_file
            assert "value" not in stored.to_dict()  # downloaded on its own
        artifact, content = other.read_artifact(first.run_id, _artifact_id(first, 1))
        assert content == BIG and artifact.sha256 == _sha(BIG)
        assert json.loads(other.read_artifact(first.run_id, _artifact_id(first, 0))[1]) == BIG_VALUE
        assert other.read_artifact(third.run_id, _artifact_id(third, 1))[1] == BIG


def test_the_inline_limit_is_16_kib_of_content(store: Store) -> None:
    at_limit = b"a" * INLINE_MAX_BYTES
    over = b"b" * (INLINE_MAX_BYTES + 1)
    record = run_record(outputs={"fetch": bytes_artifact(at_limit), "pack": bytes_artifact(over)})
    store.add_runs([record])
    assert _blobs(store) == {_sha(over): INLINE_MAX_BYTES + 1}
    back = store.get_run(record.run_id)
    assert back.steps[0].outputs["output"].data == at_limit  # type: ignore[index]
    assert store.read_artifact(record.run_id, _artifact_id(record, 1))[1] == over


def test_prune_deletes_the_blobs_no_artifact_refers_to_any_more(store: Store) -> None:
    shared = bytes_artifact(BIG)
    old = run_record(T0, outputs={"pack": shared, "fetch": bytes_artifact(BIG + b"old")})
    other = run_record(T0 + 10, deployment_id="dep-2", outputs={"pack": bytes_artifact(BIG)})
    new = run_record(T0 + 20, outputs={"fetch": bytes_artifact(BIG + b"new")})
    store.add_runs([old, other, new])
    everything = {_sha(BIG), _sha(BIG + b"old"), _sha(BIG + b"new")}
    assert set(_blobs(store)) == everything

    assert store.prune_runs(T0 + 15, dry_run=True) == [old.run_id, other.run_id]
    assert set(_blobs(store)) == everything

    assert store.prune_runs(T0 + 15, deployment_id="dep-1") == [old.run_id]
    with pytest.raises(RunNotFound):
        store.get_run(old.run_id)
    # BIG is still referenced by the dep-2 run; BIG + b"old" is gone.
    assert set(_blobs(store)) == {_sha(BIG), _sha(BIG + b"new")}
    assert store.read_artifact(other.run_id, _artifact_id(other, 1))[1] == BIG

    assert store.prune_runs(T0 + 15) == [other.run_id]
    assert set(_blobs(store)) == {_sha(BIG + b"new")}
    assert store.read_artifact(new.run_id, _artifact_id(new, 0))[1] == BIG + b"new"
    assert store.prune_runs(T0 + 30) == [new.run_id]
    assert _blobs(store) == {}


def test_a_missing_or_damaged_blob_is_a_clear_error(store: Store) -> None:
    record = run_record(outputs={"pack": bytes_artifact(BIG)})
    store.add_runs([record])
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE artifact_blobs SET data = 'something else'::bytea"))
    with pytest.raises(StoreUnavailable, match=r"is damaged: the SHA-256 of blob .* address"):
        store.read_artifact(record.run_id, _artifact_id(record, 1))
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM artifact_blobs"))
    with pytest.raises(StoreUnavailable, match=r"is missing: the store has no blob"):
        store.read_artifact(record.run_id, _artifact_id(record, 1))


def test_files_of_a_store_with_a_directory_need_that_directory(
    postgres_url: str, tmp_path: Path
) -> None:
    record = run_record(outputs={"pack": bytes_artifact(BIG)})
    with Store(postgres_url, artifact_dir=str(tmp_path / "shared")) as with_dir:
        with_dir.add_runs([record])  # ZSERVE_ARTIFACT_DIR set: a file, as before
        assert with_dir.read_artifact(record.run_id, _artifact_id(record, 1))[1] == BIG
        assert _blobs(with_dir) == {}
    with (
        Store(postgres_url) as without,
        pytest.raises(
            StoreUnavailable, match=r"kept in a file.*no artifact directory.*ZSERVE_ARTIFACT_DIR"
        ),
    ):
        without.read_artifact(record.run_id, _artifact_id(record, 1))


def test_a_database_that_refuses_writes_is_unavailable_not_a_crash(
    store: Store, postgres_url: str
) -> None:
    kept = run_record(outputs={"pack": bytes_artifact(BIG)})
    store.add_runs([kept])
    name = make_url(postgres_url).database
    with store.engine.begin() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    with Store(postgres_url) as refusing:  # new sessions: every transaction read-only
        refused = run_record(T0 + 1, outputs={"pack": bytes_artifact(BIG + b"more")})
        with pytest.raises(StoreUnavailable, match=r"Cannot write runs.*read-only transaction"):
            refusing.add_runs([refused])
        assert refusing.read_artifact(kept.run_id, _artifact_id(kept, 1))[1] == BIG
    assert set(_blobs(store)) == {_sha(BIG)}


def test_writers_and_a_pruner_at_once_leave_no_dangling_or_orphan_blob(
    postgres_url: str,
) -> None:
    Store(postgres_url).close()  # migrated before the processes start
    seconds = 2.0
    args = [(postgres_url, "", seconds, 4, BIG)] * 2
    results = run_in_processes(
        write_or_prune, [("write", *a) for a in args] + [("prune", postgres_url, seconds)]
    )
    written = sum(len(r) for r in results[:2])
    pruned = results[2]
    print(f"\n{written} runs written by 2 processes, {pruned} pruned meanwhile by a third")
    with Store(postgres_url) as store:
        referenced = {r[0] for r in _rows(store, "SELECT DISTINCT blob FROM artifacts "
                                                 "WHERE blob IS NOT NULL")}  # fmt: skip
        stored = set(_blobs(store))
        assert referenced <= stored, "an artifact refers to a blob that was pruned"
        assert stored <= referenced, "a blob no artifact refers to was left"
        for (run_id, artifact_id) in _rows(store, "SELECT run_id, id FROM artifacts "
                                                  "WHERE blob IS NOT NULL"):  # fmt: skip
            assert store.read_artifact(str(run_id), str(artifact_id))[1] == BIG
