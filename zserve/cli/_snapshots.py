"""What ``zserve deployments diff`` and ``delete`` need beyond the store: comparing two
snapshots, and refusing to delete what a running server serves."""

from __future__ import annotations

import difflib
import sys
from typing import Any

import typer

from zserve.cli._output import print_json
from zserve.errors import DeploymentInUse, UsageError
from zserve.records import DeploymentRecord
from zserve.settings import Settings

__all__ = ["check_deletable", "code_diff", "forget_code"]


def check_deletable(
    home: str, ref: str, records: list[DeploymentRecord], all_versions: bool, force: bool
) -> None:
    """Refuse to delete several versions without ``--all-versions``, or a deployment a running
    server serves without ``--force``."""
    from zserve import registry

    if len(records) > 1 and not all_versions:
        versions = ", ".join(str(r.version) for r in sorted(records, key=lambda r: r.version))
        name = records[0].name
        raise UsageError(
            f"Deployment {name!r} has {len(records)} versions ({versions}): pass --all-versions "
            f"to delete them all, or name one, such as {name}:{records[0].version}"
        )
    if force:
        return
    ids = {r.id for r in records}
    for server in registry.list_servers(home):
        if server.deployment_id in ids:
            raise DeploymentInUse(
                f"Deployment {server.deployment} is served by server {server.id} ({server.url}): "
                f"run `zserve stop {server.id}` first, or pass --force"
            )


def forget_code(home: str, deleted: list[DeploymentRecord], store: Any) -> list[str]:
    """Remove the extracted code (``$ZSERVE_HOME/code/<hash>/``) of the archives the deletion
    took out of the store, unless a running server still serves from it (``--force``), and
    extraction folders a killed extraction left; the hashes removed."""
    import shutil
    import time
    from pathlib import Path

    from zserve import registry

    base = Path(home) / "code"
    if not base.is_dir():
        return []
    serving = {s.deployment_id for s in registry.list_servers(home)}
    removed = []
    for digest in {r.code_archive for r in deleted if r.code_archive}:
        if any(r.id in serving for r in deleted if r.code_archive == digest):
            continue
        try:
            store.get_code_archive(digest, data=False)
            continue  # another deployment still uses it
        except UsageError:
            pass
        if (base / digest).is_dir():
            shutil.rmtree(base / digest)
            removed.append(digest)
    for tmp in base.glob(".tmp-*"):  # left by an extraction killed midway, an hour ago or more
        if time.time() - tmp.stat().st_mtime > 3600:
            shutil.rmtree(tmp, ignore_errors=True)
    return removed


def _resolve_pair(a: str, b: str) -> tuple[DeploymentRecord, DeploymentRecord]:
    """The two deployments; a bare version (``2``) is of the other one's name, or of the only
    name in the store."""
    from zserve.store import Store

    settings = Settings.from_env()
    with Store(settings.store_url, migrate=settings.store_migrate) as store:

        def lookup(ref: str, other: str) -> DeploymentRecord:
            if not ref.isdigit():
                return store.get_deployment(ref)
            if not other.isdigit():
                return store.get_deployment(f"{store.get_deployment(other).name}:{ref}")
            names = sorted({r.name for r in store.list_deployments()})
            if len(names) != 1:
                raise UsageError(
                    f"Versions {a} and {b} of which deployment? Name it: `zserve deployments "
                    f"diff NAME:{a} NAME:{b}` (deployments: {', '.join(names) or 'none'})"
                )
            return store.get_deployment(f"{names[0]}:{ref}")

        return lookup(a, b), lookup(b, a)


def _files(ref: DeploymentRecord) -> dict[str, bytes]:
    from zserve.engine.snapshot import unpack
    from zserve.store import Store

    if not ref.code_archive:
        raise UsageError(
            f"Deployment {ref.ref} has no stored code (it was made before snapshots): "
            "nothing to compare; redeploy it to store a snapshot"
        )
    settings = Settings.from_env()
    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        data = store.get_code_archive(ref.code_archive).data
    assert data is not None
    return unpack(data)


def _text(content: bytes) -> list[str] | None:
    try:
        return content.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def code_diff(a: str, b: str, json_: bool) -> None:
    """Print what changed in the code from deployment ``a`` to ``b``."""
    first, second = _resolve_pair(a, b)
    old, new = _files(first), _files(second)
    changes = [
        {"path": p, "status": "added" if p not in old else "removed" if p not in new else "changed"}
        for p in sorted(old.keys() | new.keys())
        if old.get(p) != new.get(p)
    ]
    if json_:
        print_json({"from": first.ref, "to": second.ref, "files": changes})
        return
    if not changes:
        typer.echo(f"{first.ref} and {second.ref} have the same code")
        return
    for change in changes:
        typer.echo(f"{change['status']:8} {change['path']}")
    for change in changes:
        if change["status"] != "changed":
            continue
        path = change["path"]
        before, after = _text(old[path]), _text(new[path])
        if before is None or after is None:
            typer.echo(f"Binary file {path} differs")
            continue
        sys.stdout.writelines(
            difflib.unified_diff(before, after, f"{first.ref}/{path}", f"{second.ref}/{path}")
        )
