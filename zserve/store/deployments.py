"""Deployments in SQL: resolving a reference (id, id prefix, name, name:version) to rows, and
the rows as ``DeploymentRecord``s. ``Store`` exposes these as methods."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zserve.errors import AmbiguousDeployment, DeploymentNotFound, UsageError
from zserve.records import DeploymentRecord
from zserve.store.models import Deployment

__all__ = ["MIN_ID_PREFIX", "NAME_VERSION", "check_new_name", "json_value", "record", "resolve"]

#: An id prefix must have at least this many characters to be taken as an id.
MIN_ID_PREFIX = 8

NAME_VERSION = re.compile(r"^(?P<name>.+):(?P<version>\d+)$")
_ID_PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]*$")
_LIST_HINT = "run `zserve deployments list` to see the deployments"


def json_value(field: str, value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it will come back from the database (and a clear error if it cannot)."""
    try:
        result = json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"Deployment {field} must be plain JSON: {exc}") from None
    if not isinstance(result, dict):
        raise UsageError(f"Deployment {field} must be a JSON object")
    return result


def check_new_name(name: str) -> None:
    """UsageError unless ``name`` can name a deployment in the store."""
    if not name.strip():
        raise UsageError("A deployment name cannot be empty")
    if not name.isprintable():
        raise UsageError(f"Invalid deployment name {name!r}: use printable characters only")
    if name != name.strip():
        raise UsageError(f"Invalid deployment name {name!r}: remove the surrounding spaces")
    if NAME_VERSION.match(name):
        raise UsageError(
            f"Invalid deployment name {name!r}: ':' followed by digits is read as a version"
        )


def record(row: Deployment) -> DeploymentRecord:
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
        code_archive=row.code_archive,
        environment=dict(row.environment or {}),
    )


def _describe(rows: Sequence[Deployment]) -> str:
    return ", ".join(f"{row.id} ({row.name}:{row.version})" for row in rows)


def resolve(session: Session, ref: str) -> list[Deployment]:
    """The rows ``ref`` names: one row, or every version of a name (newest first)."""
    ref = ref.strip()
    if not ref:
        raise UsageError(f"A deployment reference cannot be empty: {_LIST_HINT}")
    if not ref.isprintable():  # no stored name has such characters (PostgreSQL refuses NUL)
        raise DeploymentNotFound(f"No deployment matches {ref!r}: {_LIST_HINT}")

    match = NAME_VERSION.match(ref)
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
