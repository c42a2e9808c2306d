"""The store: deployments and recorded runs in SQL, on a SQLAlchemy engine on the store URL,
migrated to head when behind (unless ``ZSERVE_STORE_MIGRATE=never``); large artifacts in files
beside it, or in the database itself.

``Store(url)`` is cheap on an up-to-date database: one query of ``alembic_version`` compared with
the head revision of the migrations shipped in this package. Only a database that is behind is
upgraded, under locks, so two processes starting at once never both migrate (``migrating.py``).

A ``Store`` may be shared by threads (a writer thread and readers): every call takes its own
connection from the engine's pool. On SQLite, writes begin with ``BEGIN IMMEDIATE`` and so wait
their turn (``schema.py``). Database and file-system failures of the run methods surface as
``StoreUnavailable`` with the reason on one line.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, Engine, delete, make_url, select, text
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from zserve.errors import StoreUnavailable, UsageError
from zserve.paths import private_dir, private_file
from zserve.records import ArtifactRecord, DeploymentRecord, RunRecord
from zserve.settings import hide_password
from zserve.store import blobs, deployments, health, migrating, raw, runs
from zserve.store.artifacts import ArtifactFiles, content_of
from zserve.store.code import CodeArchives, remove_unused_archives
from zserve.store.deployments import MIN_ID_PREFIX
from zserve.store.models import Deployment
from zserve.store.schema import (
    PG_CONNECT_TIMEOUT_S,
    WRITE_OPTION,
    create_store_engine,
    current_revision,
    sqlite_file,
)

__all__ = ["MIN_ID_PREFIX", "PG_CONNECT_TIMEOUT_S", "Store"]

#: How often ``add_deployment`` retries when a concurrent deploy took the same version.
_ADD_ATTEMPTS = 20


class Store(CodeArchives):
    """Deployments and recorded runs in a SQL database (SQLite by default, PostgreSQL by URL).

    ``migrate``: what a schema that is behind gets, ``auto`` (migrated, under a lock) or
    ``never`` (refused: ``StoreUnavailable``); see ``migrating``.

    ``artifact_dir`` is where values over the inline limit go; by default ``artifacts`` beside
    a SQLite file. Other databases have no default (the server passes ``ZSERVE_ARTIFACT_DIR``
    when it is set): without one, such values are kept in the database (``blobs``), where
    every host that shares it reads them.

    Usable as a context manager; ``close()`` releases the connections.
    """

    def __init__(self, url: str, artifact_dir: str | None = None, *, migrate: str = "auto") -> None:
        self.url = url
        self._shown = shown = hide_password(url)
        migrating.check_policy(migrate)
        try:
            parsed = make_url(url)
            self._sqlite_path = sqlite_file(parsed)
            if self._sqlite_path is not None:
                if migrate == "never" and not self._sqlite_path.is_file():
                    raise migrating.missing_sqlite_file(shown, self._sqlite_path)
                private_dir(self._sqlite_path.parent, tighten=False)
                private_file(self._sqlite_path)
                parsed = parsed.set(database=str(self._sqlite_path))
            self.engine: Engine = create_store_engine(parsed)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise UsageError(
                f"The store URL {shown!r} is not usable ({exc}): use a SQLAlchemy URL such as "
                "sqlite:///path/zserve.db or postgresql+psycopg://... (ZSERVE_STORE_URL, --store)"
            ) from None
        except OSError as exc:
            raise StoreUnavailable(f"Cannot create the store at {shown}: {exc}") from None
        #: The same pool; its transactions are writes (BEGIN IMMEDIATE on SQLite).
        self._writer = self.engine.execution_options(**{WRITE_OPTION: True})
        #: SQLite: run writes on a connection of their own, straight to the driver.
        self._raw_writes = raw.RawWrites(self._writer) if self._sqlite_path else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        if artifact_dir:
            self.artifact_dir: Path | None = Path(artifact_dir).expanduser().absolute()
        elif self._sqlite_path is not None:
            self.artifact_dir = self._sqlite_path.parent / "artifacts"
        else:
            self.artifact_dir = None
        self._files = ArtifactFiles(self.artifact_dir)
        #: True when this instance brought the schema up to head.
        self.migrated = False
        try:
            self.migrated = migrating.migrate_if_behind(
                self.engine, self._writer, url, shown, self._sqlite_path, migrate
            )
        except (SQLAlchemyError, OSError) as exc:
            self.engine.dispose()
            raise StoreUnavailable(
                f"Cannot open the store at {shown}: {health.one_line(exc)}"
            ) from None
        except BaseException:
            self.engine.dispose()
            raise
        #: The database file this store opened (SQLite): ``check`` notices when it is replaced.
        self._file_id = health.file_id(self._sqlite_path) if self._sqlite_path else None

    # -- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        if self._raw_writes is not None:
            self._raw_writes.close()
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- migrations --------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The schema revision the database is at (``None`` for a fresh database)."""
        with self.engine.connect() as conn:
            return current_revision(conn)

    # -- deployments -------------------------------------------------------------------------

    def add_deployment(
        self,
        *,
        name: str,
        source: str,
        import_root: str,
        pipeline_name: str,
        code_hash: str,
        file_hashes: dict[str, str],
        spec: dict[str, Any],
        settings: dict[str, Any],
        capture_default: str,
        code_archive: str | None = None,
        environment: dict[str, Any] | None = None,
    ) -> tuple[DeploymentRecord, bool]:
        """Store a new version of ``name``; ``(record, created)``.

        When the latest version of ``name`` has the same source, code hash, settings and capture
        default, that version is returned with ``created=False`` (redeploying identical code).
        """
        deployments.check_new_name(name)
        file_hashes = deployments.json_value("file_hashes", file_hashes)
        spec = deployments.json_value("spec", spec)
        settings = deployments.json_value("settings", settings)
        for attempt in range(_ADD_ATTEMPTS):
            with self._write_sessions() as session:
                latest = session.scalars(
                    select(Deployment)
                    .where(Deployment.name == name)
                    .order_by(Deployment.version.desc())
                    .limit(1)
                ).first()
                if (
                    latest is not None
                    and latest.source == source
                    and latest.code_hash == code_hash
                    and latest.settings == settings
                    and latest.capture_default == capture_default
                    and latest.code_archive == code_archive
                    and (latest.environment or {}) == (environment or {})  # packages too
                ):
                    return deployments.record(latest), False
                version = (latest.version if latest is not None else 0) + 1
                row = Deployment(
                    id=str(uuid.uuid4()),
                    name=name,
                    version=version,
                    source=source,
                    import_root=import_root,
                    pipeline_name=pipeline_name,
                    code_hash=code_hash,
                    file_hashes=file_hashes,
                    spec=spec,
                    settings=settings,
                    capture_default=capture_default,
                    created_at=datetime.now(UTC),
                    code_archive=code_archive,
                    environment=environment or None,
                )
                session.add(row)
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    if not self._version_taken(name, version) or attempt == _ADD_ATTEMPTS - 1:
                        raise
                    # A concurrent deploy took this version: look again.
                    time.sleep(random.uniform(0.0, 0.005 * (attempt + 1)))
                    continue
                return deployments.record(row), True
        raise AssertionError("unreachable")  # pragma: no cover

    def list_deployments(self, name: str | None = None) -> list[DeploymentRecord]:
        """Every deployment (or every version of ``name``), newest first."""
        query = select(Deployment).order_by(
            Deployment.created_at.desc(), Deployment.version.desc(), Deployment.id
        )
        if name is not None:
            query = query.where(Deployment.name == name)
        with self._sessions() as session:
            return [deployments.record(row) for row in session.scalars(query)]

    def get_deployment(self, ref: str) -> DeploymentRecord:
        """Resolve ``ref``: a full id, a unique id prefix (at least 8 characters), a name (its
        latest version) or ``name:version``. An exact id or name beats a prefix."""
        with self._sessions() as session:
            rows = deployments.resolve(session, ref)
            if len(rows) > 1:  # a name: its latest version
                return deployments.record(max(rows, key=lambda row: row.version))
            return deployments.record(rows[0])

    def delete_deployment(self, ref: str) -> list[DeploymentRecord]:
        """Delete what ``ref`` names: a plain name deletes every version of it; an id, an id
        prefix or ``name:version`` deletes that one. Returns the deleted records."""
        with self._write_sessions() as session, session.begin():
            rows = deployments.resolve(session, ref)
            records = [deployments.record(row) for row in rows]
            session.execute(delete(Deployment).where(Deployment.id.in_([r.id for r in records])))
            remove_unused_archives(session, {r.code_archive for r in records if r.code_archive})
        return sorted(records, key=lambda r: r.version, reverse=True)

    def _version_taken(self, name: str, version: int) -> bool:
        with self._sessions() as session:
            found = session.scalar(
                select(Deployment.id).where(Deployment.name == name, Deployment.version == version)
            )
            return found is not None

    # -- recorded runs -----------------------------------------------------------------------

    def add_runs(self, records: Sequence[RunRecord]) -> None:
        """Store ``records`` in one transaction (a group commit): all of them, or none.

        Contents over ``INLINE_MAX_BYTES`` are written to files before the transaction, or, with
        no artifact directory, to ``artifact_blobs`` in it. Raises
        ``StoreUnavailable`` when the database or the artifact directory fails, ``UsageError``
        when a run id is already stored.
        """
        if not records:
            return
        with health.translated(f"Cannot write runs to the store at {self._shown}"):
            batch = runs.build_batch(records, self._files)
            if self._raw_writes is not None and not batch.blobs:  # SQLite: straight to the driver
                with self._raw_writes.transaction() as cursor:
                    self._ensure_files(batch)
                    for table, columns, rows in batch.tables():
                        raw.insert_rows(cursor, table, columns, rows)
                return
            with self._writer.begin() as conn:
                if batch.files or batch.blobs:
                    runs.lock_files(conn, exclusive=False)
                    self._ensure_files(batch)
                    blobs.put(conn, batch.blobs)
                runs.insert_batch(conn, batch)

    def _ensure_files(self, batch: runs.Batch) -> None:
        """Inside the write transaction, where no prune can remove them: the batch's files."""
        for path, content in batch.files.items():
            self._files.ensure(path, content)

    def get_run(self, run_id: str) -> RunRecord:
        """One run with its steps in order, their artifacts and its metadata. An artifact kept
        in a file or a blob has neither ``value`` nor ``data``: ``read_artifact`` gives its
        content."""
        with self._reading() as conn:
            return runs.get_run(conn, run_id)

    def list_runs(
        self,
        deployment_id: str | None = None,
        status: str | None = None,
        capture: str | None = None,
        since: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[RunRecord], str | None]:
        """Runs started at or after ``since`` (Unix time), newest first, with steps and metadata
        but no artifacts; and the cursor of the next page (None on the last). ``limit`` is 1 to
        500."""
        with self._reading() as conn:
            return runs.list_runs(
                conn, deployment_id=deployment_id, status=status, capture=capture,
                since=since, limit=limit, cursor=cursor,
            )  # fmt: skip

    def read_artifact(self, run_id: str, artifact_id: str) -> tuple[ArtifactRecord, bytes]:
        """The artifact and its content: the JSON text of a value, or the bytes."""
        with self._reading() as conn:
            artifact, path, blob = runs.get_artifact(conn, run_id, artifact_id)
            if blob is not None:
                return artifact, blobs.read(conn, blob, artifact_id)
        if path is None:
            return artifact, content_of(artifact)
        with health.translated(f"Cannot read an artifact of the store at {self._shown}"):
            return artifact, self._files.read(path, artifact_id)

    def resolve_run(self, prefix: str) -> str:
        """The full id of the run ``prefix`` names: a full id, or a unique prefix of at least
        ``MIN_RUN_PREFIX`` characters."""
        with self._reading() as conn:
            return runs.resolve_run(conn, prefix)

    def prune_runs(
        self, older_than: float, deployment_id: str | None = None, dry_run: bool = False
    ) -> list[str]:
        """Delete the runs started before ``older_than`` (Unix time), of one deployment or all,
        with their steps, artifacts and metadata, and the blobs no row refers to any more, in
        one transaction; then the artifact files no row refers to any more, and orphans older
        than ``ORPHAN_GRACE_S`` (what a crash between the two left). Returns the ids of the runs
        deleted (would be, with dry_run)."""
        if dry_run:
            with self._reading() as conn:
                return runs.old_runs(conn, older_than, deployment_id)
        with health.translated(f"Cannot prune the store at {self._shown}"):
            with self._writer.begin() as conn:
                run_ids = runs.old_runs(conn, older_than, deployment_id)
                paths, shas = runs.delete_runs(conn, run_ids)
                if shas:  # writers wait: none can refer to one of them meanwhile
                    runs.lock_files(conn, exclusive=True)
                    blobs.remove_unreferenced(conn, shas)
            runs.remove_unreferenced(self._writer, self._files, paths)
        return run_ids

    def check(self) -> None:
        """Raise ``StoreUnavailable`` (naming the problem and the fix) unless the store can be
        written: its SQLite file is still the one opened and writable, the artifact directory
        can be written, and a write transaction on ``alembic_version`` goes through (rolled
        back). A stopped PostgreSQL fails within ``PG_CONNECT_TIMEOUT_S``."""
        if self._sqlite_path is not None:
            health.check_sqlite_file(self._sqlite_path, self._file_id)
        if self.artifact_dir is not None:
            health.check_directory(self.artifact_dir, "the artifact directory")
        probe = text("UPDATE alembic_version SET version_num = version_num")
        doing = f"The store at {self._shown} cannot be written"
        with health.translated(doing), self._writer.connect() as conn:
            trans = conn.begin()
            try:
                found = conn.execute(probe).rowcount
            finally:
                trans.rollback()
        if found != 1:
            raise StoreUnavailable(
                f"The store at {self._shown} has no schema version (alembic_version is "
                "empty): it was changed outside zserve. Point ZSERVE_STORE_URL at a zserve store"
            )

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection in a read transaction (a plain BEGIN: one snapshot for all its SELECTs),
        database errors raised as ``StoreUnavailable``."""
        doing = f"Cannot read the store at {self._shown}"
        with health.translated(doing), self.engine.connect() as conn, conn.begin():
            yield conn
