"""SQLAlchemy 2 models of the store: deployments, and the recorded runs of tracked mode (runs,
their steps, artifacts and metadata).

The schema itself is owned by the Alembic migrations in ``zserve/store/migrations/versions``;
these classes describe it for queries (and for ``alembic revision --autogenerate``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Artifact",
    "ArtifactBlob",
    "Base",
    "CodeArchive",
    "Deployment",
    "Run",
    "RunMetadata",
    "RunStep",
    "UTCDateTime",
]

#: Stable constraint and index names, so batch migrations on SQLite can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so the value is stored as naive
    UTC (which also sorts correctly as text) and handed back with ``tzinfo=UTC``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Deployment(Base):
    """One version of a named pipeline deployment."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("name", "version"),)

    #: uuid4 as its 36-character string form.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    import_root: Mapped[str] = mapped_column(Text)
    pipeline_name: Mapped[str] = mapped_column(String(255))
    code_hash: Mapped[str] = mapped_column(String(128))
    file_hashes: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    capture_default: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The ``code_archives.hash`` of its snapshot; NULL for a deployment made before snapshots.
    code_archive: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("code_archives.hash"), nullable=True, index=True
    )
    #: {"python", "packages", "include"} of the snapshot; NULL without one.
    environment: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )

    def __repr__(self) -> str:
        return f"<Deployment {self.name}:{self.version} {self.id}>"


class CodeArchive(Base):
    """A deployment's code: a canonical tar (gzip), addressed by the SHA-256 of the tar."""

    __tablename__ = "code_archives"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    #: [{"path", "size", "sha256"}] in path order
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# -- recorded runs (tracked mode) ---------------------------------------------------------------
#
# Times are Unix seconds in DOUBLE PRECISION columns: a RunRecord's floats come back exactly, and
# the newest-first listing pages on (started_at, id). JSON columns hold SQL NULL for None.


class Run(Base):
    """One recorded run. Columns a capture mode does not record are NULL."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_started_at", "started_at", "id"),
        Index("ix_runs_deployment_started", "deployment_id", "started_at", "id"),
    )

    #: A time-ordered UUID (v7) as its 36-character string form: inserts append to the index.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: Not indexed: job ids are random (v4), and an index on them cost every commit a random
    #: page; nothing looks a run up by its job yet.
    job_id: Mapped[str] = mapped_column(String(36))
    #: No foreign key: runs outlive a deleted deployment (``prune_runs`` removes them).
    deployment_id: Mapped[str] = mapped_column(String(36))
    pipeline: Mapped[str] = mapped_column(String(255))
    capture: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Double, nullable=True)
    parameters: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )
    #: {"type", "message", "step"?}
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class RunStep(Base):
    """One step of a recorded run; ``position`` keeps the order of the record."""

    __tablename__ = "steps"

    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Double, nullable=True)
    #: {"type", "message", "traceback"}
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    output_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Artifact(Base):
    """A captured value of a step: inline JSON (``value``), inline bytes (``data``), or, above
    the inline limit, a file under the artifact directory (``path``, relative to it) or, in a
    store without one, a row of ``artifact_blobs`` (``blob``)."""

    __tablename__ = "artifacts"

    #: uuid4 as its 36-character string form.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("runs.id", ondelete="CASCADE"), index=True
    )
    #: The step's ``steps.position`` in the same run.
    step_position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    value: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: "<sha256[:2]>/<sha256>" of the content when it lives in a file; NULL when inline.
    path: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    #: The ``artifact_blobs.sha256`` of the content when it lives in the database; else NULL.
    #: No foreign key (adding one would rebuild the table on SQLite): writers and the pruner
    #: keep rows and blobs consistent under a shared lock (``runs.lock_files``).
    blob: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    truncated: Mapped[bool] = mapped_column(Boolean)
    loadable: Mapped[bool] = mapped_column(Boolean)


class ArtifactBlob(Base):
    """The content of artifacts over the inline limit in a store with no artifact directory
    (PostgreSQL by default): kept once per content, addressed by its SHA-256."""

    __tablename__ = "artifact_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class RunMetadata(Base):
    """One ``get_context().log_metadata`` entry of a recorded run, in the record's order."""

    __tablename__ = "run_metadata"

    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    value: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
