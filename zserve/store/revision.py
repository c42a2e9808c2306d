"""The schema revision of a store, read without creating or changing anything, and the explicit
upgrade to the head of the shipped migrations: what ``zserve db current`` and ``zserve db
upgrade`` do, and how a server's ``/status`` tells whether its store answers.

Opening a ``Store`` migrates a database that is behind (under a lock), or refuses it under
``ZSERVE_STORE_MIGRATE=never`` (``migrating.py``); ``zserve db upgrade`` is that same step run on
its own, whatever the setting, so that the hosts of a deployment, started after it, find the
schema at head and none of them migrates.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from zserve.errors import StoreUnavailable, UsageError
from zserve.settings import hide_password, store_url_of
from zserve.store.health import one_line
from zserve.store.schema import (
    alembic_config,
    create_store_engine,
    current_revision,
    sqlite_file,
)

__all__ = ["check_exists", "known_revisions", "revision_at", "store_url_of", "upgrade"]


def _parsed(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise _unusable(url, exc) from None


def _unusable(url: str, exc: BaseException) -> UsageError:
    return UsageError(
        f"The store URL {hide_password(url)!r} is not usable ({exc}): give a SQLAlchemy URL "
        "such as sqlite:///path/zserve.db or postgresql://user:password@host/db"
    )


def _engine(url: str, parsed: URL, path: Path | None) -> Engine:
    """An engine that only reads: a SQLite file is opened as it is (no WAL switch, no pool)."""
    try:
        if path is not None:
            return create_engine(parsed.set(database=str(path)), poolclass=NullPool)
        return create_store_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise _unusable(url, exc) from None


def check_exists(url: str) -> None:
    """``StoreUnavailable`` when ``url`` names a SQLite file that does not exist (opening a
    ``Store`` would make it); other URLs are checked when they are opened."""
    try:
        path = sqlite_file(make_url(url))
    except ArgumentError:
        return  # opening it says why it is not usable
    if path is not None and not path.is_file():
        raise StoreUnavailable(
            f"There is no store at {hide_password(url)}: {path} does not exist (deploy into it "
            "first: ZSERVE_STORE_URL=URL zserve deploy SOURCE)"
        )


def revision_at(url: str) -> str | None:
    """The schema revision of the store at ``url`` (None: an empty database). Creates nothing:
    a SQLite file that does not exist is ``StoreUnavailable``, as is a database that does not
    answer (PostgreSQL: within ``PG_CONNECT_TIMEOUT_S``)."""
    shown = hide_password(url)
    parsed = _parsed(url)
    path = sqlite_file(parsed)
    if path is not None and not path.is_file():
        raise StoreUnavailable(
            f"There is no store at {shown}: {path} does not exist (`zserve db upgrade` makes it)"
        )
    engine = _engine(url, parsed, path)
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"Cannot read the store at {shown}: {one_line(exc)}") from None
    finally:
        engine.dispose()


def upgrade(url: str) -> tuple[str | None, str | None]:
    """Bring the store at ``url`` to the head revision (making the database of a SQLite file
    that does not exist yet): (the revision before, the revision after). Refuses a database of
    a newer zserve (``UsageError``), as opening a ``Store`` does."""
    from zserve.store.store import Store

    path = sqlite_file(_parsed(url))
    before = None if path is not None and not path.exists() else revision_at(url)
    with Store(url, migrate="auto") as store:  # whatever ZSERVE_STORE_MIGRATE says
        return before, store.current_revision()


def known_revisions() -> set[str]:
    """Every revision of the shipped migrations (imports Alembic)."""
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
