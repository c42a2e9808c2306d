"""Recorded runs in the store, on SQLite and PostgreSQL: a batch written in one transaction, read
back field for field, listed newest first with filters and a cursor, found by an id prefix; a
store made before runs existed is upgraded with its deployments kept."""

from __future__ import annotations

import dataclasses
import json

import pytest
from alembic import command
from pydantic_core import to_json
from store_helpers import (
    T0,
    bytes_artifact,
    deployment_args,
    json_artifact,
    run_record,
)

from zserve.errors import AmbiguousRun, NotFound, RunNotFound, UsageError
from zserve.records import ArtifactRecord, JobStatus, RunRecord
from zserve.store import Store
from zserve.store.schema import SCHEMA_HEAD, alembic_config


def _doc(record: RunRecord) -> str:
    return json.dumps(record.to_dict(), sort_keys=True)


def test_every_field_of_a_run_comes_back(store: Store) -> None:
    truncated = json_artifact({"rows": [1, 2]}, truncated=True)
    not_loadable = dataclasses.replace(
        json_artifact("<object at 0x1>"), content_type="text/x-python-repr", loadable=False
    )
    failed = run_record(T0 + 0.000_000_1, status=JobStatus.FAILED)
    completed = run_record(
        T0 + 1,
        capture="metadata",
        outputs={"fetch": truncated, "pack": not_loadable, "report": json_artifact(None)},
    )
    bare = run_record(T0 + 2, capture="metadata", outputs={"fetch": None, "pack": None})
    bare.parameters = bare.metadata = None
    store.add_runs([failed, completed, bare])

    for original in (failed, completed, bare):
        back = store.get_run(original.run_id)
        assert back == original  # dataclass equality: every field, floats exactly
        assert _doc(back) == _doc(original)
    back = store.get_run(failed.run_id)
    assert [s.name for s in back.steps] == ["fetch", "pack", "report"]
    assert back.steps[2].error == {
        "type": "ValueError",
        "message": "boom",
        "traceback": "Traceback...",
    }
    assert "traceback" not in json.dumps(back.to_dict())
    assert list(back.metadata or {}) == ["zeta", "alpha", "source"]  # the record's order
    assert back.steps[1].outputs is not None
    assert back.steps[1].outputs["output"].data == b"\x00\x01\x02\xff"
    assert store.get_run(bare.run_id).steps[0].outputs is None  # "outputs" stays absent


def test_inline_artifacts_download_as_json_text_or_bytes(store: Store) -> None:
    record = run_record()
    store.add_runs([record])
    fetch, pack = (record.steps[i].outputs["output"] for i in (0, 1))  # type: ignore[index]
    artifact, content = store.read_artifact(record.run_id, fetch.artifact_id)
    assert artifact == fetch
    assert json.loads(content) == fetch.value and len(content) == fetch.size
    assert content == to_json(fetch.value)  # the hashed text
    artifact, content = store.read_artifact(record.run_id, pack.artifact_id)
    assert (artifact, content) == (pack, b"\x00\x01\x02\xff")


def test_unknown_runs_and_artifacts_are_not_found(store: Store) -> None:
    record = run_record()
    other = run_record(T0 + 1)
    store.add_runs([record, other])
    with pytest.raises(RunNotFound, match="No run 'nope': `zserve runs list`"):
        store.get_run("nope")
    with pytest.raises(RunNotFound, match="No run 'nope'"):
        store.read_artifact("nope", "whatever")
    with pytest.raises(NotFound, match=f"Run {record.run_id} has no artifact 'nope'") as info:
        store.read_artifact(record.run_id, "nope")
    assert not isinstance(info.value, RunNotFound)
    theirs = other.steps[0].outputs["output"].artifact_id  # type: ignore[index]
    with pytest.raises(NotFound, match="has no artifact"):
        store.read_artifact(record.run_id, theirs)  # an artifact of another run


def test_a_batch_is_one_transaction(store: Store) -> None:
    first = run_record(T0)
    store.add_runs([first])
    second = run_record(T0 + 1)
    with pytest.raises(UsageError) as info:
        store.add_runs([second, dataclasses.replace(first, job_id="again")])
    assert "\n" not in str(info.value) and "INSERT" not in str(info.value)
    runs, _ = store.list_runs()
    assert [r.run_id for r in runs] == [first.run_id]  # the second one was not written either
    store.add_runs([])


def test_listing_is_newest_first_with_filters_and_a_cursor(store: Store) -> None:
    records = [
        run_record(
            T0 + n,
            status=JobStatus.FAILED if n % 3 == 0 else JobStatus.COMPLETED,
            capture="metadata" if n % 2 else "full",
            deployment_id="dep-2" if n == 9 else "dep-1",
        )
        for n in range(1, 10)
    ]
    # Two runs that started at the same time: the id breaks the tie, across pages too.
    twins = [run_record(T0 + 4, run_id=f"{c * 8}-0000-4000-8000-000000000000") for c in "ab"]
    store.add_runs(records[:5])
    store.add_runs(records[5:] + twins)
    newest_first = sorted(
        (r for r in [*records, *twins] if r.deployment_id == "dep-1"),
        key=lambda r: (r.started_at, r.run_id),
        reverse=True,
    )
    seen: list[RunRecord] = []
    cursor, pages = None, 0
    while True:
        page, cursor = store.list_runs(deployment_id="dep-1", limit=3, cursor=cursor)
        seen += page
        pages += 1
        if cursor is None:
            break
    assert [r.run_id for r in seen] == [r.run_id for r in newest_first] and pages == 4
    assert all(s.outputs is None for r in seen for s in r.steps)  # listings carry no values
    expected = dataclasses.replace(newest_first[0], steps=[])
    assert dataclasses.replace(seen[0], steps=[]) == expected
    assert [s.name for s in seen[0].steps] == ["fetch", "pack", "report"]

    failed, _ = store.list_runs(status="failed")
    assert [r.run_id for r in failed] == [records[n - 1].run_id for n in (9, 6, 3)]
    recent, _ = store.list_runs(capture="full", since=T0 + 5)
    assert [r.run_id for r in recent] == [records[n - 1].run_id for n in (8, 6)]
    assert store.list_runs(status=JobStatus.CANCELLED) == ([], None)
    everything, cursor = store.list_runs(limit=500)
    assert len(everything) == 11 and cursor is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": 0}, "Invalid limit 0: it must be from 1 to 500"),
        ({"limit": 501}, "Invalid limit 501: it must be from 1 to 500"),
        ({"cursor": "not-a-cursor"}, "Invalid cursor 'not-a-cursor': pass the 'next' value"),
        ({"cursor": "WzEsMl0"}, "Invalid cursor"),  # [1,2]: valid base64 and JSON, wrong shape
        ({"cursor": "e30"}, "Invalid cursor"),  # {}
        ({"status": "done"}, "Unknown run status 'done': use one of queued, running"),
        ({"capture": "lots"}, "Unknown capture mode 'lots': use one of none, metadata"),
    ],
)
def test_bad_listing_arguments_are_usage_errors(
    store: Store, arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        store.list_runs(**arguments)  # type: ignore[arg-type]


def test_a_run_is_found_by_a_unique_prefix_of_its_id(store: Store) -> None:
    ids = [
        "abcd1234-0000-4000-8000-000000000001",
        "abcd5678-0000-4000-8000-000000000002",
        *(f"ffff{n:04d}-0000-4000-8000-000000000000" for n in range(7)),
    ]
    store.add_runs([run_record(T0 + i, run_id=run_id) for i, run_id in enumerate(ids)])
    assert store.resolve_run(ids[0]) == ids[0]
    assert store.resolve_run("abcd1") == ids[0]
    assert store.resolve_run(" ABCD5 ") == ids[1]
    with pytest.raises(AmbiguousRun, match=f"'abcd' matches several runs: {ids[1]}, {ids[0]}\\."):
        store.resolve_run("abcd")
    with pytest.raises(AmbiguousRun) as info:
        store.resolve_run("ffff")
    listed = str(info.value).split(": ", 1)[1].split(". ")[0]
    assert listed.count("ffff") == 5 and listed.endswith(", ...")  # newest five
    assert ids[-1] in listed
    with pytest.raises(RunNotFound, match="No run id starts or ends with 'abce'"):
        store.resolve_run("abce")
    with pytest.raises(RunNotFound):
        store.resolve_run("abc%")  # LIKE wildcards are plain characters
    with pytest.raises(UsageError, match="'abc' is too short: give at least 4 characters"):
        store.resolve_run("abc")


def test_a_store_made_before_runs_is_upgraded_keeping_its_deployments(store_url: str) -> None:
    with Store(store_url) as first:
        first.add_deployment(**deployment_args())
    command.downgrade(alembic_config(store_url), "0001")
    with Store(store_url) as store:
        assert store.migrated and store.current_revision() == SCHEMA_HEAD
        assert [d.ref for d in store.list_deployments()] == ["weather:1"]
        record = run_record()
        store.add_runs([record])
        assert store.get_run(record.run_id) == record


def test_bytes_artifacts_keep_their_bytes_whatever_they_hold(store: Store) -> None:
    data = bytes(range(256)) * 8
    record = run_record(outputs={"pack": bytes_artifact(data)})
    store.add_runs([record])
    artifact = store.get_run(record.run_id).steps[1].outputs["output"]  # type: ignore[index]
    assert isinstance(artifact, ArtifactRecord) and artifact.data == data
    assert store.read_artifact(record.run_id, artifact.artifact_id)[1] == data


def test_a_run_is_found_by_the_last_characters_that_runs_list_shows(store: Store) -> None:
    from zserve.records import new_id

    ids = [new_id() for _ in range(3)]  # time-ordered: their starts are alike
    store.add_runs([run_record(run_id=i) for i in ids])
    for run_id in ids:
        assert store.resolve_run(run_id[-8:]) == run_id
