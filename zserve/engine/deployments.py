"""Deployments: building one from a pipeline's source, and, before serving one, checking that
its code did not change and compiling its plan. The store keeps what ``build_deployment``
returns; the CLI, a dashboard or an API call this the same way."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zserve.engine.capture import resolve_capture
from zserve.engine.plan import Plan, compile_plan
from zserve.engine.snapshot import capture as capture_snapshot
from zserve.engine.snapshot import file_list, pack, snapshot_root
from zserve.errors import SourceChanged, UsageError
from zserve.records import DeploymentRecord
from zserve.sdk.loader import file_hashes, load_pipeline

__all__ = [
    "DeploymentDraft",
    "build_deployment",
    "check_sources",
    "drifted_files",
    "load_location",
    "load_plan",
    "redeploy_command",
    "served_record",
]


@dataclass(frozen=True)
class DeploymentDraft:
    """A compiled pipeline, ready to be stored as a deployment (``Store.add_deployment``)."""

    name: str
    source: str
    import_root: str
    pipeline_name: str
    code_hash: str
    file_hashes: dict[str, str]
    spec: dict[str, Any]
    settings: dict[str, Any]
    capture_default: str
    plan: Plan = field(repr=False, compare=False)
    #: The snapshot's address and stored bytes (None when no local file was captured).
    code_archive: str | None = None
    archive_data: bytes | None = field(default=None, repr=False, compare=False)
    #: The snapshot's files: [{"path", "size", "sha256"}].
    archive_files: list[dict[str, Any]] = field(default_factory=list)
    #: {"python", "packages", "include"}: what the snapshot was built against.
    environment: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """What the store records (everything but the plan)."""
        return {
            "name": self.name,
            "source": self.source,
            "import_root": self.import_root,
            "pipeline_name": self.pipeline_name,
            "code_hash": self.code_hash,
            "file_hashes": self.file_hashes,
            "spec": self.spec,
            "settings": self.settings,
            "capture_default": self.capture_default,
            "code_archive": self.code_archive,
            "environment": self.environment,
        }


#: What a deployment name may be: it is typed on command lines, in URLs and in file names.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """``name`` if it is a valid deployment name, else UsageError naming the rule."""
    if not NAME_PATTERN.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise UsageError(
            f"Invalid deployment name {shown!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (choose one with --name)"
        )
    return name


def build_deployment(
    source: str,
    *,
    app_dir: str | None = None,
    name: str | None = None,
    capture: str | None = None,
    capture_default: str = "none",
    include: list[str] | None = None,
) -> DeploymentDraft:
    """Import and compile ``source`` ('module:attr' or 'file.py:attr', imported from
    ``app_dir`` or the working directory). The deployment's capture mode is ``capture``, else
    the pipeline's own, else ``capture_default``. Whatever the user's module prints while it is
    imported goes to stderr, so that it never mixes with a command's JSON output.

    The local files the import loaded and the ``include`` globs' files make the deployment's
    snapshot (``zserve.engine.snapshot``); its address is the code hash."""
    before = set(sys.modules)
    with contextlib.redirect_stdout(sys.stderr):
        loaded = load_pipeline(source, app_dir)
        pipe = loaded.pipeline
        plan = compile_plan(pipe)
    mode = resolve_capture(capture, pipe.capture, capture_default)
    hashes = file_hashes(pipe)
    loaded_files = [*hashes, *_module_files(set(sys.modules) - before)]
    root = snapshot_root(loaded.source, loaded.import_root)
    snap = capture_snapshot(root, loaded_files, include or ())
    code_archive, data = pack(snap.files) if snap.files else (None, None)
    return DeploymentDraft(
        name=check_name(name or pipe.name),
        source=loaded.source,
        import_root=loaded.import_root,
        pipeline_name=pipe.name,
        code_hash=code_archive or _digest(hashes),
        file_hashes=hashes,
        spec=plan.spec,
        settings=pipe.settings,
        capture_default=mode,
        plan=plan,
        code_archive=code_archive,
        archive_data=data,
        archive_files=file_list(snap.files),
        environment=snap.environment() if code_archive else {},
    )


def _module_files(names: set[str]) -> list[str]:
    """The files of the modules ``names`` (those that have one)."""
    files = []
    for name in names:
        path = getattr(sys.modules.get(name), "__file__", None)
        if isinstance(path, str):
            files.append(path)
    return files


def _digest(hashes: dict[str, str]) -> str:
    text = "\n".join(f"{k} {v}" for k, v in sorted(hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def redeploy_command(record: DeploymentRecord) -> str:
    """The ``zserve deploy`` command that makes a new version from the working copy."""
    include = "".join(f" --include {shlex.quote(g)}" for g in record.environment.get("include", []))
    return (
        f"zserve deploy {shlex.quote(record.source)} --name {shlex.quote(record.name)} "
        f"--app-dir {shlex.quote(record.import_root)}{include}"
    )


def check_sources(record: DeploymentRecord) -> None:
    """Refuse to serve code that changed since it was deployed (SourceChanged says how to
    redeploy). A deployment with a snapshot is served from it and never refused."""
    if record.code_archive:
        return
    redeploy = (
        f"`{redeploy_command(record)}` (deployment {record.ref} has no stored code: it was "
        "made before snapshots, or its code belongs to an installed package, so it is served "
        "from its source path)"
    )
    for path, digest in sorted(record.file_hashes.items()):
        p = Path(path)
        if not p.is_file():
            raise SourceChanged(
                f"{path} (part of deployment {record.ref}) no longer exists: redeploy with "
                f"{redeploy}"
            )
        if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            raise SourceChanged(
                f"{path} changed since deployment {record.ref} was made: redeploy with {redeploy}"
            )


def load_plan(record: DeploymentRecord) -> Plan:
    """Import and compile the pipeline a deployment names (from its snapshot when served)."""
    return compile_plan(load_pipeline(*load_location(record)).pipeline)


def drifted_files(record: DeploymentRecord, files: list[dict[str, Any]]) -> list[str]:
    """The snapshot files (``files``: its file list) whose working copy is missing or differs,
    as paths relative to the snapshot root; for a deployment without a snapshot, its changed
    source files."""
    if not record.code_archive:
        changed = []
        for path, digest in sorted(record.file_hashes.items()):
            p = Path(path)
            if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != digest:
                changed.append(path)
        return changed
    root = snapshot_root(record.source, record.import_root)
    out = []
    for entry in files:
        p = root / entry["path"]
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != entry["sha256"]:
            out.append(entry["path"])
    return out


def served_record(record: DeploymentRecord, code_dir: Path) -> DeploymentRecord:
    """``record`` as it is served from its snapshot, extracted in ``code_dir``."""
    return dataclasses.replace(record, code_dir=str(code_dir))


def load_location(record: DeploymentRecord) -> tuple[str, str]:
    """(source, import root) to import the pipeline from: in the extracted snapshot when the
    record is served from one, else where it was deployed from."""
    if not record.code_dir:
        return record.source, record.import_root
    root = snapshot_root(record.source, record.import_root)
    target, _, attr = record.source.rpartition(":")
    source = record.source
    if target.endswith(".py") or "/" in target:
        source = f"{Path(record.code_dir) / Path(target).relative_to(root)}:{attr}"
    return source, record.code_dir
