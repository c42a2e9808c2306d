"""Code archives in SQL: a deployment's snapshot, stored once per content address. ``Store``
inherits these methods."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from zserve.errors import UsageError
from zserve.records import DeploymentRecord
from zserve.store import deployments
from zserve.store.models import CodeArchive, Deployment

__all__ = ["ArchiveRow", "CodeArchives", "remove_unused_archives"]


@dataclass(frozen=True)
class ArchiveRow:
    """One stored archive: its address, file list and (when asked for) its bytes."""

    hash: str
    files: list[dict[str, Any]]
    size: int
    data: bytes | None = None


class CodeArchives:
    """Mixin of ``Store``: code archives and the deployments that use them."""

    _sessions: sessionmaker[Session]
    _write_sessions: sessionmaker[Session]

    def add_code_archive(self, digest: str, data: bytes, files: list[dict[str, Any]]) -> bool:
        """Store an archive unless one with this address is stored; True when it was added."""
        with self._write_sessions() as session:
            if session.get(CodeArchive, digest) is not None:
                return False
            session.add(
                CodeArchive(
                    hash=digest,
                    data=data,
                    files=files,
                    size=len(data),
                    created_at=datetime.now(UTC),
                )
            )
            try:
                session.commit()
            except IntegrityError:  # a concurrent deploy of the same code stored it
                session.rollback()
                return False
            return True

    def get_code_archive(self, digest: str, *, data: bool = True) -> ArchiveRow:
        """The archive at ``digest`` (with its bytes unless ``data=False``)."""
        with self._sessions() as session:
            row = session.get(CodeArchive, digest)
            if row is None:
                raise UsageError(
                    f"Code archive {digest[:12]} is not in the store: redeploy the pipeline"
                )
            return ArchiveRow(row.hash, list(row.files), row.size, row.data if data else None)

    def code_archive_count(self) -> int:
        """How many archives the store holds."""
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(CodeArchive)) or 0

    def find_deployments(self, ref: str) -> list[DeploymentRecord]:
        """Every deployment ``ref`` names: one, or all versions of a bare name (newest first)."""
        with self._sessions() as session:
            return [deployments.record(row) for row in deployments.resolve(session, ref)]


def remove_unused_archives(session: Session, digests: set[str]) -> None:
    """Delete the archives among ``digests`` that no deployment uses any more."""
    for digest in digests:
        used = session.scalar(select(exists().where(Deployment.code_archive == digest)))
        if not used:
            session.execute(delete(CodeArchive).where(CodeArchive.hash == digest))
