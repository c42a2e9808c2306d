"""What only PostgreSQL can get wrong: sessions in another time zone than UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import make_url, text
from store_helpers import deployment_args

from zserve.store import Store

pytestmark = pytest.mark.postgresql


def _in_time_zone(url: str, zone: str) -> str:
    """``url`` with every session of it in ``zone`` (libpq's ``options``)."""
    return (
        make_url(url)
        .update_query_dict({"options": f"-c timezone={zone}"})
        .render_as_string(hide_password=False)
    )


def test_created_at_is_utc_whatever_the_session_time_zone(postgres_url: str) -> None:
    before = datetime.now(UTC)
    with Store(_in_time_zone(postgres_url, "Asia/Tokyo")) as store:
        with store.engine.connect() as conn:
            assert conn.execute(text("SHOW timezone")).scalar() == "Asia/Tokyo"
        first, _ = store.add_deployment(**deployment_args(code_hash="1" * 64))
    with Store(_in_time_zone(postgres_url, "America/New_York")) as store:
        second, _ = store.add_deployment(**deployment_args(code_hash="2" * 64))
        assert store.get_deployment(first.id) == first
    after = datetime.now(UTC)
    for record in (first, second):
        assert record.created_at.endswith("+00:00")
        assert before <= datetime.fromisoformat(record.created_at) <= after
    with Store(postgres_url) as store:
        assert store.list_deployments() == [second, first]
