"""Deployments in the store: versions, references, listing and deletion."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session
from store_helpers import deployment_args

from zserve.errors import AmbiguousDeployment, DeploymentNotFound, NotFound, UsageError
from zserve.records import DeploymentRecord
from zserve.store import Store
from zserve.store.models import Deployment


def _add(store: Store, **overrides: Any) -> DeploymentRecord:
    record, created = store.add_deployment(**deployment_args(**overrides))
    assert created
    return record


def _insert(store: Store, id: str, name: str, version: int = 1) -> None:
    """A row with a chosen id, written straight through SQLAlchemy."""
    args = deployment_args(name=name)
    with Session(store.engine) as session, session.begin():
        session.add(Deployment(id=id, version=version, created_at=datetime.now(UTC), **args))


# -- adding ---------------------------------------------------------------------------------------


def test_first_add_is_version_1_and_identical_redeploy_returns_it(store: Store) -> None:
    first, created = store.add_deployment(**deployment_args())
    assert created is True
    assert first.version == 1
    assert first.name == "weather"
    assert uuid.UUID(first.id).version == 4
    assert str(uuid.UUID(first.id)) == first.id

    again, created_again = store.add_deployment(**deployment_args())
    assert created_again is False
    assert again == first
    assert [r.id for r in store.list_deployments()] == [first.id]


@pytest.mark.parametrize(
    "change",
    [
        {"code_hash": "c" * 64},
        {"source": "/srv/app/weather.py:weather_pipeline"},
        {"settings": {"capture": "none", "retries": 2}},
        {"capture_default": "metadata"},
    ],
)
def test_a_change_that_matters_adds_version_2(store: Store, change: dict[str, Any]) -> None:
    first = _add(store)
    second, created = store.add_deployment(**deployment_args(**change))
    assert created is True
    assert second.version == 2
    assert second.id != first.id
    assert store.get_deployment("weather") == second


def test_redeploying_an_older_version_adds_a_new_one(store: Store) -> None:
    _add(store, code_hash="1" * 64)
    _add(store, code_hash="2" * 64)
    third, created = store.add_deployment(**deployment_args(code_hash="1" * 64))
    assert (third.version, created) == (3, True)


def test_versions_are_counted_per_name(store: Store) -> None:
    assert _add(store, name="weather").version == 1
    assert _add(store, name="slow").version == 1
    assert _add(store, name="weather", code_hash="d" * 64).version == 2


def test_json_fields_round_trip(store_url: str) -> None:
    spec = {
        "steps": [{"name": "fetch", "inputs": ["city"], "outputs": ["output"]}],
        "parameters": {
            "city": {"type": "str", "required": True},
            "days": {"type": "int", "required": False, "default": 1},
        },
        "json_schema": {"type": "object", "additionalProperties": False, "nested": [[1, 2.5]]},
        "flags": [True, False, None],
        "unicode": "Zürich ☀ 東京",
    }
    settings = {"capture": "none", "ratio": 0.25, "tags": ["a", "b"], "extra": None}
    file_hashes = {"/srv/app/a.py": "1" * 64, "/srv/app/pkg/b.py": "2" * 64}
    with Store(store_url) as store:
        added, _ = store.add_deployment(
            **deployment_args(spec=spec, settings=settings, file_hashes=file_hashes)
        )
    with Store(store_url) as reopened:
        got = reopened.get_deployment(added.id)
    assert got == added
    assert got.spec == spec
    assert got.settings == settings
    assert got.file_hashes == file_hashes
    assert DeploymentRecord.from_json(got.to_json()) == got


def test_tuples_in_json_fields_come_back_as_lists_and_still_match(store: Store) -> None:
    first, _ = store.add_deployment(**deployment_args(settings={"pair": (1, 2)}))
    assert first.settings == {"pair": [1, 2]}
    again, created = store.add_deployment(**deployment_args(settings={"pair": (1, 2)}))
    assert (again.id, created) == (first.id, False)


def test_created_at_is_iso_8601_utc(store: Store) -> None:
    before = datetime.now(UTC)
    record = _add(store)
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", record.created_at)
    created = datetime.fromisoformat(record.created_at)
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= after
    assert store.get_deployment(record.id).created_at == record.created_at


def test_values_that_are_not_json_are_refused(store: Store) -> None:
    with pytest.raises(UsageError, match="settings must be plain JSON"):
        store.add_deployment(**deployment_args(settings={"when": datetime.now(UTC)}))
    assert store.list_deployments() == []


@pytest.mark.parametrize("name", ["", "  ", " weather", "weather:3", "wea\x00ther", "a\nb"])
def test_names_that_cannot_be_referenced_are_refused(store: Store, name: str) -> None:
    with pytest.raises(UsageError):
        store.add_deployment(**deployment_args(name=name))


# -- listing --------------------------------------------------------------------------------------


def test_list_is_newest_first_and_filters_by_name(store: Store) -> None:
    a1 = _add(store, name="a", code_hash="1" * 64)
    b1 = _add(store, name="b", code_hash="1" * 64)
    a2 = _add(store, name="a", code_hash="2" * 64)
    assert [r.id for r in store.list_deployments()] == [a2.id, b1.id, a1.id]
    assert [r.ref for r in store.list_deployments("a")] == ["a:2", "a:1"]
    assert store.list_deployments("missing") == []


def test_list_orders_by_version_when_created_at_ties(store: Store) -> None:
    same = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    with Session(store.engine) as session, session.begin():
        for version in (1, 3, 2):
            args = deployment_args(code_hash=str(version) * 64)
            session.add(Deployment(id=str(uuid.uuid4()), version=version, created_at=same, **args))
    records = store.list_deployments()
    assert [r.version for r in records] == [3, 2, 1]
    assert {r.created_at for r in records} == {"2026-11-27T17:00:00.000000+00:00"}


# -- references -----------------------------------------------------------------------------------


def test_get_by_full_id_prefix_name_and_name_version(store: Store) -> None:
    v1 = _add(store, code_hash="1" * 64)
    v2 = _add(store, code_hash="2" * 64)
    assert store.get_deployment(v1.id) == v1
    assert store.get_deployment(v1.id.upper()) == v1
    assert store.get_deployment(v1.id[:8]) == v1
    assert store.get_deployment(v2.id[:13]) == v2
    assert store.get_deployment("weather") == v2
    assert store.get_deployment("weather:1") == v1
    assert store.get_deployment("weather:2") == v2


def test_unknown_reference_names_it_and_says_how_to_list(store: Store) -> None:
    _add(store)
    with pytest.raises(DeploymentNotFound) as info:
        store.get_deployment("nosuch")
    message = str(info.value)
    assert "'nosuch'" in message
    assert "zserve deployments list" in message
    assert isinstance(info.value, NotFound)
    assert (info.value.exit_code, info.value.http_status) == (2, 404)


def test_a_reference_with_a_control_character_is_not_found(store: Store) -> None:
    _add(store)
    with pytest.raises(DeploymentNotFound):
        store.get_deployment("weather\x00")


def test_unknown_version_lists_the_versions_there_are(store: Store) -> None:
    _add(store, code_hash="1" * 64)
    _add(store, code_hash="2" * 64)
    with pytest.raises(DeploymentNotFound, match=r"'weather' has no version 7 \(it has 1, 2\)"):
        store.get_deployment("weather:7")
    with pytest.raises(DeploymentNotFound, match="zserve deployments list"):
        store.get_deployment("other:1")


def test_prefix_shorter_than_8_characters_is_not_an_id(store: Store) -> None:
    record = _add(store)
    with pytest.raises(DeploymentNotFound, match="at least 8 characters"):
        store.get_deployment(record.id[:7])
    assert store.get_deployment(record.id[:8]) == record


def test_prefix_matching_several_ids_is_ambiguous_and_lists_them(store: Store) -> None:
    first = "abcdef12-0000-4000-8000-000000000001"
    second = "abcdef12-0000-4000-8000-000000000002"
    _insert(store, first, "alpha", 1)
    _insert(store, second, "beta", 3)
    with pytest.raises(AmbiguousDeployment) as info:
        store.get_deployment("abcdef12")
    message = str(info.value)
    assert f"{first} (alpha:1)" in message
    assert f"{second} (beta:3)" in message
    assert info.value.http_status == 409
    with pytest.raises(AmbiguousDeployment):
        store.delete_deployment("abcdef12-0000")
    # A longer prefix or the full id settles it.
    assert store.get_deployment(second).name == "beta"
    assert store.get_deployment(first.upper()).name == "alpha"
    assert len(store.list_deployments()) == 2


def test_exact_name_wins_over_an_id_prefix(store: Store) -> None:
    _insert(store, "deadbeef-0000-4000-8000-000000000001", "other")
    named = _add(store, name="deadbeef")
    assert store.get_deployment("deadbeef") == named
    assert store.get_deployment("deadbeef-0000").name == "other"
    deleted = store.delete_deployment("deadbeef")
    assert [r.id for r in deleted] == [named.id]
    assert [r.name for r in store.list_deployments()] == ["other"]


def test_surrounding_whitespace_in_a_reference_is_ignored(store: Store) -> None:
    record = _add(store)
    assert store.get_deployment(f"  {record.id}  ") == record


# -- deleting -------------------------------------------------------------------------------------


def test_delete_by_name_removes_every_version(store: Store) -> None:
    v1 = _add(store, code_hash="1" * 64)
    v2 = _add(store, code_hash="2" * 64)
    other = _add(store, name="other")
    deleted = store.delete_deployment("weather")
    assert deleted == [v2, v1]
    assert store.list_deployments("weather") == []
    assert store.list_deployments() == [other]
    with pytest.raises(DeploymentNotFound):
        store.get_deployment("weather")


def test_delete_by_name_version_removes_only_that_one(store: Store) -> None:
    v1 = _add(store, code_hash="1" * 64)
    v2 = _add(store, code_hash="2" * 64)
    assert store.delete_deployment("weather:2") == [v2]
    assert store.list_deployments("weather") == [v1]
    assert store.get_deployment("weather") == v1


def test_delete_by_id_or_prefix_removes_only_that_one(store: Store) -> None:
    v1 = _add(store, code_hash="1" * 64)
    v2 = _add(store, code_hash="2" * 64)
    v3 = _add(store, code_hash="3" * 64)
    assert store.delete_deployment(v1.id) == [v1]
    assert store.delete_deployment(v3.id[:8]) == [v3]
    assert store.list_deployments() == [v2]


def test_delete_unknown_reference_is_not_found(store: Store) -> None:
    _add(store)
    with pytest.raises(DeploymentNotFound, match="zserve deployments list"):
        store.delete_deployment("nosuch")
    with pytest.raises(DeploymentNotFound):
        store.delete_deployment("weather:9")
    assert len(store.list_deployments()) == 1
