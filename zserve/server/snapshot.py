"""Serving a deployment's snapshot: extract its archive (once) into ``$ZSERVE_HOME/code/<hash>/``
and point the deployment's source and import root there, with a warning line when the working
copy changed since, or when the installed packages differ from those it was deployed with.

A deployment without a snapshot (made before snapshots) is served from its source path and
refused when its code changed (``check_sources``)."""

from __future__ import annotations

from pathlib import Path

from zserve.engine.deployments import (
    check_sources,
    drifted_files,
    redeploy_command,
    served_record,
)
from zserve.engine.snapshot import extract, installed_mismatches
from zserve.records import DeploymentRecord
from zserve.settings import Settings

__all__ = ["drift_line", "prepare"]


def drift_line(record: DeploymentRecord, changed: list[str]) -> str:
    """The one line ``start`` prints when the working copy differs from the snapshot."""
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return (
        f"serving {record.ref} as deployed; {shown} changed since — run "
        f"`{redeploy_command(record)}` to serve your edits"
    )


def prepare(settings: Settings, record: DeploymentRecord) -> tuple[DeploymentRecord, list[str]]:
    """(``record`` as it is served, the warning lines to show): the snapshot extracted and the
    record pointing into it; a deployment without a snapshot checked as before."""
    if not record.code_archive:
        check_sources(record)
        return record, []
    from zserve.store import Store

    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        archive = store.get_code_archive(record.code_archive)
    assert archive.data is not None
    code_dir = extract(Path(settings.home), archive.hash, archive.data)
    warnings = []
    if changed := drifted_files(record, archive.files):
        warnings.append(drift_line(record, changed))
    for dist, deployed, installed in installed_mismatches(record.environment.get("packages", {})):
        now = f"{installed} is installed" if installed else "it is not installed"
        warnings.append(f"Warning: {record.ref} was deployed with {dist} {deployed}; {now}")
    return served_record(record, code_dir), warnings
