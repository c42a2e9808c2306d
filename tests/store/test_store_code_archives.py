"""Code archives in the store (both backends): stored once per address, referenced by
deployments, deleted with the last deployment that uses them; and a store of an older schema
keeps its deployments, without a snapshot, when it is upgraded."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from store_helpers import deployment_args

from zserve.engine.snapshot import file_list, pack, unpack
from zserve.errors import UsageError
from zserve.store import Store
from zserve.store.schema import SCHEMA_HEAD, alembic_config

FILES = {"weather.py": b"print('v1')\n", "data/cities.csv": b"Paris\n"}


def _archive(store: Store, files: dict[str, bytes] = FILES) -> str:
    digest, data = pack(files)
    store.add_code_archive(digest, data, file_list(files))
    return digest


def _deploy(store: Store, digest: str | None, **overrides: Any) -> Any:
    env = {"python": "3.11.7", "packages": {"httpx": "0.27.0"}, "include": ["data/*.csv"]}
    args = deployment_args(code_hash=digest or "a" * 64, **overrides)
    return store.add_deployment(**args, code_archive=digest, environment=env if digest else None)


def test_an_archive_is_stored_once_per_address_and_comes_back_whole(store: Store) -> None:
    digest, data = pack(FILES)
    assert pack(dict(reversed(FILES.items()))) == (digest, data)  # canonical: order-free
    assert store.add_code_archive(digest, data, file_list(FILES)) is True
    assert store.add_code_archive(digest, data, file_list(FILES)) is False
    assert store.code_archive_count() == 1
    row = store.get_code_archive(digest)
    assert row.data is not None and unpack(row.data) == FILES
    assert [f["path"] for f in row.files] == ["data/cities.csv", "weather.py"]
    assert store.get_code_archive(digest, data=False).data is None


def test_an_unknown_archive_says_to_redeploy(store: Store) -> None:
    with pytest.raises(UsageError, match="is not in the store: redeploy"):
        store.get_code_archive("f" * 64)


def test_a_deployment_records_its_archive_and_environment(store: Store) -> None:
    digest = _archive(store)
    record, created = _deploy(store, digest)
    assert created
    got = store.get_deployment(record.id)
    assert got.code_archive == digest
    assert got.environment == {
        "python": "3.11.7",
        "packages": {"httpx": "0.27.0"},
        "include": ["data/*.csv"],
    }
    again, created = _deploy(store, digest)
    assert (again.version, created) == (1, False)
    other = _archive(store, {"weather.py": b"print('v2')\n"})
    changed, created = _deploy(store, other)
    assert (changed.version, created) == (2, True)
    assert store.code_archive_count() == 2


def test_the_same_code_against_other_packages_is_a_new_version(store: Store) -> None:
    """Else the "deployed with httpx 0.27.0" warning could never be cleared by redeploying."""
    digest = _archive(store)
    first, _ = _deploy(store, digest)
    env = {"python": "3.11.7", "packages": {"httpx": "0.28.1"}, "include": ["data/*.csv"]}
    args = deployment_args(code_hash=digest)
    upgraded, created = store.add_deployment(**args, code_archive=digest, environment=env)
    assert created and upgraded.version == first.version + 1
    assert store.get_deployment(upgraded.id).environment["packages"] == {"httpx": "0.28.1"}


def test_deleting_the_last_user_of_an_archive_deletes_it(store: Store) -> None:
    digest = _archive(store)
    _deploy(store, digest)
    _deploy(store, digest, name="copy")  # the same code under another name: one archive
    assert store.code_archive_count() == 1
    store.delete_deployment("weather")
    assert store.code_archive_count() == 1
    store.delete_deployment("copy")
    assert store.code_archive_count() == 0


def test_find_deployments_gives_every_version_of_a_bare_name(store: Store) -> None:
    _deploy(store, _archive(store))
    _deploy(store, _archive(store, {"weather.py": b"v2"}))
    assert [r.ref for r in store.find_deployments("weather")] == ["weather:2", "weather:1"]
    assert [r.ref for r in store.find_deployments("weather:1")] == ["weather:1"]


def test_deployments_of_an_older_schema_have_no_archive_after_the_upgrade(store_url: str) -> None:
    Store(store_url).close()
    command.downgrade(alembic_config(store_url), "0002")
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO deployments (id, name, version, source, import_root, "
                    "pipeline_name, code_hash, file_hashes, spec, settings, capture_default, "
                    "created_at) VALUES ('00000000-0000-4000-8000-000000000001', 'old', 1, "
                    "'m:p', '/srv', 'p', 'h', '{}', '{}', '{}', 'none', "
                    "'2026-01-01 00:00:00')"
                )
            )
    finally:
        engine.dispose()
    with Store(store_url) as store:
        assert store.migrated is True and store.current_revision() == SCHEMA_HEAD
        (old,) = store.list_deployments()
        assert (old.ref, old.code_archive, old.environment) == ("old:1", None, {})
