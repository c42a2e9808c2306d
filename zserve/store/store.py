"""The deployment store: a SQLAlchemy engine on the store URL, migrated to head when behind.

``Store(url)`` is cheap on an up-to-date database: one query of ``alembic_version`` compared with
the head revision of the migrations shipped in this package. Only a database that is behind is
upgraded, under an exclusive file lock, so two processes starting at once never both migrate.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import (
    Engine,
    create_engine,
    delete,
    event,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from zserve.errors import AmbiguousDeployment, DeploymentNotFound, ServerError, UsageError
from zserve.records import DeploymentRecord
from zserve.settings import hide_password
from zserve.store.models import Deployment
from zserve.store.schema import (
    LOCK_KEY,
    SCHEMA_HEAD,
    alembic_config,
    configure_sqlite,
    current_revision,
    exclusive_lock,
    sqlite_file,
)

__all__ = ["MIN_ID_PREFIX", "Store"]

#: An id prefix must have at least this many characters to be taken as an id.
MIN_ID_PREFIX = 8

#: How often ``add_deployment`` retries when a concurrent deploy took the same version.
_ADD_ATTEMPTS = 20

_NAME_VERSION = re.compile(r"^(?P<name>.+):(?P<version>\d+)$")
_ID_PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]*$")
_LIST_HINT = "run `zserve deployments list` to see the deployments"


class Store:
    """Deployments in a SQL database (SQLite by default, PostgreSQL by URL).

    Usable as a context manager; ``close()`` releases the connections.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        shown = hide_password(url)
        try:
            parsed = make_url(url)
            self._sqlite_path = sqlite_file(parsed)
            if self._sqlite_path is not None:
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
                parsed = parsed.set(database=str(self._sqlite_path))
            self.engine: Engine = create_engine(parsed)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise UsageError(
                f"The store URL {shown!r} is not usable ({exc}): set ZSERVE_STORE_URL to a "
                "SQLAlchemy URL such as sqlite:///path/zserve.db or postgresql+psycopg://..."
            ) from None
        except OSError as exc:
            raise ServerError(f"Cannot create the store at {shown}: {exc}") from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", configure_sqlite)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: True when this instance brought the schema up to head.
        self.migrated = False
        try:
            self.migrated = self._migrate_if_behind()
        except (SQLAlchemyError, OSError) as exc:
            self.engine.dispose()
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
            raise ServerError(f"Cannot open the store at {shown}: {reason}") from None
        except BaseException:
            self.engine.dispose()
            raise

    # -- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
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

    def _migrate_if_behind(self) -> bool:
        if self.current_revision() == SCHEMA_HEAD:
            return False
        with exclusive_lock(self._lock_path()), self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Also serialise hosts that share the database but not the lock file.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            current = current_revision(conn)
            if current == SCHEMA_HEAD:  # another process migrated while we waited for the lock
                return False
            self._check_known(current)
            from alembic import command  # only needed on this rare path

            cfg = alembic_config(self.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return True

    def _check_known(self, revision: str | None) -> None:
        if revision is None:
            return
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config())
        if revision not in {rev.revision for rev in script.walk_revisions()}:
            raise UsageError(
                f"The store at {self.engine.url.render_as_string(hide_password=True)} is at "
                f"schema revision {revision!r}, which this zserve does not know (head is "
                f"{SCHEMA_HEAD!r}): it was written by a newer zserve. Upgrade zserve, or "
                "point ZSERVE_STORE_URL at another database."
            )

    def _lock_path(self) -> Path:
        if self._sqlite_path is not None:
            return self._sqlite_path.with_name(self._sqlite_path.name + ".lock")
        key = hashlib.sha256(self.url.encode()).hexdigest()[:24]
        return Path(tempfile.gettempdir()) / f"zserve-store-{key}.lock"

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
    ) -> tuple[DeploymentRecord, bool]:
        """Store a new version of ``name``; ``(record, created)``.

        When the latest version of ``name`` has the same source, code hash, settings and capture
        default, that version is returned with ``created=False`` (redeploying identical code).
        """
        if not name.strip():
            raise UsageError("A deployment name cannot be empty")
        if not name.isprintable():
            raise UsageError(f"Invalid deployment name {name!r}: use printable characters only")
        if name != name.strip():
            raise UsageError(f"Invalid deployment name {name!r}: remove the surrounding spaces")
        if _NAME_VERSION.match(name):
            raise UsageError(
                f"Invalid deployment name {name!r}: ':' followed by digits is read as a version"
            )
        file_hashes = _json_value("file_hashes", file_hashes)
        spec = _json_value("spec", spec)
        settings = _json_value("settings", settings)
        for attempt in range(_ADD_ATTEMPTS):
            with self._sessions() as session:
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
                ):
                    return _record(latest), False
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
                return _record(row), True
        raise AssertionError("unreachable")  # pragma: no cover

    def list_deployments(self, name: str | None = None) -> list[DeploymentRecord]:
        """Every deployment (or every version of ``name``), newest first."""
        query = select(Deployment).order_by(
            Deployment.created_at.desc(), Deployment.version.desc(), Deployment.id
        )
        if name is not None:
            query = query.where(Deployment.name == name)
        with self._sessions() as session:
            return [_record(row) for row in session.scalars(query)]

    def get_deployment(self, ref: str) -> DeploymentRecord:
        """Resolve ``ref``: a full id, a unique id prefix (at least 8 characters), a name (its
        latest version) or ``name:version``. An exact id or name beats a prefix."""
        with self._sessions() as session:
            rows = _resolve(session, ref)
            if len(rows) > 1:  # a name: its latest version
                return _record(max(rows, key=lambda row: row.version))
            return _record(rows[0])

    def delete_deployment(self, ref: str) -> list[DeploymentRecord]:
        """Delete what ``ref`` names: a plain name deletes every version of it; an id, an id
        prefix or ``name:version`` deletes that one. Returns the deleted records."""
        with self._sessions() as session, session.begin():
            rows = _resolve(session, ref)
            records = [_record(row) for row in rows]
            session.execute(delete(Deployment).where(Deployment.id.in_([r.id for r in records])))
        return sorted(records, key=lambda r: r.version, reverse=True)

    def _version_taken(self, name: str, version: int) -> bool:
        with self._sessions() as session:
            found = session.scalar(
                select(Deployment.id).where(Deployment.name == name, Deployment.version == version)
            )
            return found is not None


# -- helpers ---------------------------------------------------------------------------------


def _json_value(field: str, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it will come back from the database (and a clear error if it cannot)."""
    try:
        result = json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"Deployment {field} must be plain JSON: {exc}") from None
    if not isinstance(result, dict):
        raise UsageError(f"Deployment {field} must be a JSON object")
    return result


def _record(row: Deployment) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        name=row.name,
        version=row.version,
        source=row.source,
        import_root=row.import_root,
        pipeline_name=row.pipeline_name,
        code_hash=row.code_hash,
        file_hashes=dict(row.file_hashes),
        spec=dict(row.spec),
        settings=dict(row.settings),
        capture_default=row.capture_default,
        created_at=row.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
    )


def _describe(rows: Sequence[Deployment]) -> str:
    return ", ".join(f"{row.id} ({row.name}:{row.version})" for row in rows)


def _resolve(session: Session, ref: str) -> list[Deployment]:
    """The rows ``ref`` names: one row, or every version of a name (newest first)."""
    ref = ref.strip()
    if not ref:
        raise UsageError(f"A deployment reference cannot be empty: {_LIST_HINT}")
    if not ref.isprintable():  # no stored name has such characters (PostgreSQL refuses NUL)
        raise DeploymentNotFound(f"No deployment matches {ref!r}: {_LIST_HINT}")

    match = _NAME_VERSION.match(ref)
    if match:
        name, version = match["name"], int(match["version"])
        row = session.scalars(
            select(Deployment).where(Deployment.name == name, Deployment.version == version)
        ).first()
        if row is not None:
            return [row]
        versions = session.scalars(
            select(Deployment.version).where(Deployment.name == name).order_by(Deployment.version)
        ).all()
        if versions:
            have = ", ".join(str(v) for v in versions)
            raise DeploymentNotFound(
                f"Deployment {name!r} has no version {version} (it has {have}): {_LIST_HINT}"
            )
        raise DeploymentNotFound(f"No deployment matches {ref!r}: {_LIST_HINT}")

    lowered = ref.lower()
    row = session.get(Deployment, lowered)
    if row is not None:
        return [row]

    by_name = list(
        session.scalars(
            select(Deployment).where(Deployment.name == ref).order_by(Deployment.version.desc())
        )
    )
    if by_name:
        return by_name

    if _ID_PREFIX.match(lowered):
        if len(lowered) >= MIN_ID_PREFIX:
            matches = list(
                session.scalars(
                    select(Deployment)
                    .where(Deployment.id.startswith(lowered, autoescape=True))
                    .order_by(Deployment.created_at.desc(), Deployment.id)
                    .limit(11)
                )
            )
            if len(matches) == 1:
                return matches
            if matches:
                shown = _describe(matches[:10]) + (", ..." if len(matches) > 10 else "")
                raise AmbiguousDeployment(
                    f"Deployment reference {ref!r} matches several deployments: {shown}. "
                    "Use a longer id prefix, the full id or name:version."
                )
        else:
            raise DeploymentNotFound(
                f"No deployment matches {ref!r} (an id prefix needs at least "
                f"{MIN_ID_PREFIX} characters): {_LIST_HINT}"
            )
    raise DeploymentNotFound(f"No deployment matches {ref!r}: {_LIST_HINT}")
