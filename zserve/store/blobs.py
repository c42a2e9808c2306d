"""Artifact contents in the database: what a store with no artifact directory (PostgreSQL, unless
``ZSERVE_ARTIFACT_DIR`` is set) does with values over ``INLINE_MAX_BYTES``, so that every host
sharing the database reads them.

Each content is one row of ``artifact_blobs``, addressed by its SHA-256 and kept once however
many artifacts have it; an artifact row names it in ``artifacts.blob``. Blobs are written in the
transaction that inserts the rows pointing at them, and deleted in the transaction of the prune
that removed the last such row. The two are kept apart by the lock artifact files use
(``runs.lock_files``): writers hold it shared from before they look for a blob until they
commit, the pruner holds it exclusively while it deletes blobs no row refers to; so a writer
never points at a blob a prune is deleting, and a prune never deletes a blob a writer just
found there.

Plain SQLAlchemy Core on a ``Connection`` the caller opened (``Store`` chooses the transaction
and translates errors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from zserve.errors import StoreUnavailable
from zserve.store.models import Artifact, ArtifactBlob

__all__ = ["BLOBS", "digest", "put", "read", "remove_unreferenced"]

BLOBS = cast(Table, ArtifactBlob.__table__)
_ARTIFACTS = cast(Table, Artifact.__table__)

#: Blob addresses per IN (...) list or INSERT, and bytes per INSERT: bounded statements.
_CHUNK = 500
_INSERT_BYTES = 8 * 1024 * 1024


def digest(content: bytes) -> str:
    """The address of ``content``: its SHA-256, in hex."""
    return hashlib.sha256(content).hexdigest()


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def put(conn: Connection, contents: Mapping[str, bytes]) -> int:
    """Store the contents (address -> bytes) that are not stored yet; how many were sent.

    The caller holds the shared lock (``runs.lock_files``), so a blob found here stays until the
    transaction commits. Those not found are inserted in address order (two writers inserting
    the same new contents then wait for each other instead of deadlocking), skipping any a
    concurrent writer stored first (``ON CONFLICT DO NOTHING``).
    """
    if not contents:
        return 0
    wanted = sorted(contents)
    stored: set[str] = set()
    for chunk in _chunks(wanted):
        query = select(BLOBS.c.sha256).where(BLOBS.c.sha256.in_(chunk))
        stored.update(conn.execute(query).scalars())
    missing = [sha for sha in wanted if sha not in stored]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(BLOBS).on_conflict_do_nothing(index_elements=["sha256"])
    rows: list[dict[str, Any]] = []
    size = 0
    for sha in missing:
        rows.append({"sha256": sha, "size": len(contents[sha]), "data": contents[sha]})
        size += len(contents[sha])
        if size >= _INSERT_BYTES or len(rows) >= _CHUNK:
            conn.execute(statement, rows)
            rows, size = [], 0
    if rows:
        conn.execute(statement, rows)
    return len(missing)


def read(conn: Connection, sha256: str, artifact_id: str) -> bytes:
    """The content at ``sha256``, checked against its address."""
    data: Any = conn.execute(select(BLOBS.c.data).where(BLOBS.c.sha256 == sha256)).scalar()
    if data is None:
        raise StoreUnavailable(
            f"The content of artifact {artifact_id} is missing: the store has no blob "
            f"{sha256[:12]}. It was deleted outside zserve"
        )
    content = bytes(data)  # psycopg hands bytea back as bytes, other drivers as memoryview
    if digest(content) != sha256:
        raise StoreUnavailable(
            f"The content of artifact {artifact_id} is damaged: the SHA-256 of blob "
            f"{sha256[:12]} does not match its address. It was changed outside zserve"
        )
    return content


def remove_unreferenced(conn: Connection, candidates: Iterable[str]) -> int:
    """Delete the blobs among ``candidates`` that no artifact row refers to; how many. The
    caller holds the lock exclusively (``runs.lock_files``): no writer can refer to one
    meanwhile."""
    unreferenced = ~exists().where(_ARTIFACTS.c.blob == BLOBS.c.sha256)
    removed = 0
    for chunk in _chunks(sorted(set(candidates))):
        query = delete(BLOBS).where(BLOBS.c.sha256.in_(chunk), unreferenced)
        removed += conn.execute(query).rowcount
    return removed
