from __future__ import annotations

import pytest

from zserve.errors import UsageError
from zserve.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({"HOME": "/home/u"}, home="/h")
    assert (s.host, s.port, s.workers, s.capture_default, s.log_level) == (
        "127.0.0.1",
        8001,
        1,
        "none",
        "info",
    )
    assert s.store_url == "sqlite:////h/zserve.db"
    assert s.max_body_bytes == 1024 * 1024


def test_large_artifacts_go_beside_a_sqlite_store_and_into_any_other_unless_a_dir_is_set() -> None:
    assert Settings.from_env({}, home="/h").artifact_dir == "/h/artifacts"
    pg = {"ZSERVE_STORE_URL": "postgresql+psycopg://u@db/zserve"}
    assert Settings.from_env(pg, home="/h").artifact_dir == ""  # the database keeps them
    shared = {**pg, "ZSERVE_ARTIFACT_DIR": "/mnt/shared/artifacts"}
    assert Settings.from_env(shared, home="/h").artifact_dir == "/mnt/shared/artifacts"


def test_flags_beat_env_which_beats_spec_aliases() -> None:
    env = {
        "ZSERVE_PORT": "9000",
        "ZENML_SERVICE_PORT": "9100",
        "ZENML_SERVICE_HOST": "0.0.0.0",
        "ZENML_PIPELINE_DEPLOYMENT_ID": "abc",
        "ZENML_LOG_LEVEL": "WARNING",
    }
    s = Settings.from_env(env)
    assert s.port == 9000  # ZSERVE_ name wins over the alias
    assert s.host == "0.0.0.0" and s.deployment_id == "abc" and s.log_level == "warning"
    assert Settings.from_env(env, port=1234, host=None).port == 1234  # None = flag not given


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ZSERVE_PORT": "eighty"}, "ZSERVE_PORT='eighty' is not a whole number"),
        ({"ZENML_SERVICE_PORT": "x"}, "ZENML_SERVICE_PORT='x' is not a whole number"),
        ({"ZSERVE_PORT": "70000"}, "Invalid port 70000"),
        ({"ZSERVE_WORKERS": "0"}, "Invalid workers 0"),
        ({"ZSERVE_CAPTURE_DEFAULT": "most"}, "Unknown capture mode 'most'"),
        ({"ZSERVE_ACCESS_LOG": "maybe"}, "is not a boolean"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Settings.from_env(env)


def test_round_trips_as_json_and_hides_secrets() -> None:
    s = Settings.from_env({}, auth_key="k", store_url="postgresql+psycopg://u:pw@db/z", home="/h")
    assert Settings.from_json(s.to_json()) == s
    public = s.public()
    assert public["auth_key"] == "set"
    assert public["store_url"] == "postgresql+psycopg://u:***@db/z"
    assert s.store_kind == "postgresql"
