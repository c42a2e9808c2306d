"""What opening a store does with a schema that is not at head, by ``ZSERVE_STORE_MIGRATE``:

- ``auto`` (the default): migrate it, in one write transaction, under an exclusive file lock
  (beside a SQLite file; in the temporary directory for other databases) and, on PostgreSQL,
  under a transaction-scoped advisory lock too, so that hosts sharing the database but not the
  lock file never both migrate: the one that waited finds the schema at head and does nothing.
- ``never``: refuse it (``StoreUnavailable``, exit 3) and change nothing, not even make the file
  of a SQLite store that does not exist; ``zserve db upgrade`` migrates it explicitly. For hosts
  of a shared database whose migration is a step of its own (the Kubernetes migration Job), so
  that no host migrates the schema under the others while they serve.

A schema written by a newer zserve (a revision this one does not know) is refused either way.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from sqlalchemy import Engine, text

from zserve.errors import StoreUnavailable, UsageError
from zserve.settings import STORE_MIGRATE_MODES
from zserve.store.schema import (
    LOCK_KEY,
    SCHEMA_HEAD,
    alembic_config,
    current_revision,
    exclusive_lock,
)

__all__ = ["check_policy", "migrate_if_behind", "missing_sqlite_file"]

UPGRADE_HINT = "run `zserve db upgrade` (with --store URL, or ZSERVE_STORE_URL set) first"


def check_policy(migrate: str) -> None:
    if migrate not in STORE_MIGRATE_MODES:
        raise UsageError(
            f"Unknown store migration policy {migrate!r} (ZSERVE_STORE_MIGRATE): use one of "
            f"{', '.join(STORE_MIGRATE_MODES)}"
        )


def missing_sqlite_file(shown: str, path: Path) -> StoreUnavailable:
    """What opening a SQLite store that does not exist is, under ``never``."""
    return StoreUnavailable(
        f"There is no store at {shown}: {path} does not exist, and ZSERVE_STORE_MIGRATE=never "
        f"does not make one: {UPGRADE_HINT}"
    )


def migrate_if_behind(
    engine: Engine, writer: Engine, url: str, shown: str, sqlite_path: Path | None, migrate: str
) -> bool:
    """Bring the store to head when it is behind and ``migrate`` is ``auto``: whether it was
    migrated by this call. ``writer``: the engine's write transactions (BEGIN IMMEDIATE)."""
    with engine.connect() as conn:
        revision = current_revision(conn)
    if revision == SCHEMA_HEAD:
        return False
    if migrate == "never":
        check_known(revision, shown)
        at = f"schema revision {revision}" if revision else "no schema (an empty database)"
        raise StoreUnavailable(
            f"The store at {shown} is at {at}, behind this zserve's {SCHEMA_HEAD}, and "
            f"ZSERVE_STORE_MIGRATE=never: {UPGRADE_HINT}"
        )
    # One write transaction (BEGIN IMMEDIATE on SQLite): the whole upgrade or nothing.
    with exclusive_lock(_lock_path(url, sqlite_path)), writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Also serialise hosts that share the database but not the lock file.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        current = current_revision(conn)
        if current == SCHEMA_HEAD:  # another process migrated while we waited for the lock
            return False
        check_known(current, shown)
        from alembic import command  # only needed on this rare path

        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True


def check_known(revision: str | None, shown: str) -> None:
    """Refuse a schema revision this zserve does not know: a newer zserve wrote it."""
    if revision is None:
        return
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    if revision not in {rev.revision for rev in script.walk_revisions()}:
        raise UsageError(
            f"The store at {shown} is at schema revision {revision!r}, which this zserve does "
            f"not know (head is {SCHEMA_HEAD!r}): it was written by a newer zserve. Upgrade "
            "zserve, or point ZSERVE_STORE_URL at another database."
        )


def _lock_path(url: str, sqlite_path: Path | None) -> Path:
    if sqlite_path is not None:
        return sqlite_path.with_name(sqlite_path.name + ".lock")
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"zserve-store-{key}.lock"
