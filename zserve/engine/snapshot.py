"""Snapshots: the code a deployment imported, packed as one content-addressed archive.

``capture`` runs while ``build_deployment`` imports the pipeline: the files under the snapshot
root that the import loaded (never installed distributions, a virtual environment or zserve
itself), plus the data files of ``--include`` globs. ``pack`` makes a canonical tar of them
(sorted, no times, no owners): its SHA-256 is the archive's address, so identical code makes the
same archive. ``extract`` unpacks one, once, into ``$ZSERVE_HOME/code/<hash>/`` (a temporary
folder renamed into place); a server imports the pipeline from there.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import site
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from zserve.errors import UsageError
from zserve.paths import private_dir

__all__ = [
    "Snapshot",
    "capture",
    "extract",
    "file_list",
    "installed_mismatches",
    "pack",
    "snapshot_root",
    "unpack",
]

_ZSERVE_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Snapshot:
    """The captured code: relative POSIX path -> content, and what it was built against."""

    files: dict[str, bytes]
    python: str
    #: distribution name -> version, for the distributions the captured code imports
    packages: dict[str, str] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)

    def environment(self) -> dict[str, Any]:
        return {"python": self.python, "packages": self.packages, "include": self.include}


def snapshot_root(source: str, import_root: str) -> Path:
    """Where a deployment's snapshot paths are relative to: the import root, or for a file
    source outside it, the file's folder."""
    root = Path(import_root)
    target = source.rpartition(":")[0]
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_relative_to(root):
            return path.parent
    return root


def _excluded_dirs() -> list[Path]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    dirs.add(site.getusersitepackages())
    return [Path(d).resolve() for d in dirs if d] + [_ZSERVE_DIR]


def _local(path: Path, root: Path, excluded: list[Path]) -> bool:
    if not path.is_relative_to(root) or not path.is_file():
        return False
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return False
    # a folder that holds the root (a project inside a venv) does not exclude it
    return not any(path.is_relative_to(d) and not root.is_relative_to(d) for d in excluded)


def capture(root: Path, loaded_files: Iterable[str], include: Iterable[str] = ()) -> Snapshot:
    """The snapshot of ``loaded_files`` (absolute paths the import loaded) that are local code
    under ``root``, the local modules those import (also the ones a step imports only when it
    runs), and the files ``include`` globs (relative to ``root``) match. A file is named by the
    path the import saw: a link keeps its own name."""
    given_root = Path(os.path.abspath(root))
    root = root.resolve()
    excluded = _excluded_dirs()
    paths: dict[str, Path] = {}
    for name in loaded_files:
        path = Path(os.path.abspath(name))
        rel = _named(path, given_root, root)
        if rel is not None and _local(path.resolve(), root, excluded):
            paths[rel] = path
    _add_local_imports(paths, given_root, root, excluded)
    patterns = list(include)
    for pattern in patterns:
        if Path(pattern).is_absolute() or ".." in PurePosixPath(pattern).parts:
            raise UsageError(
                f"--include {pattern!r} must be a glob relative to {root} (no '..', not absolute)"
            )
        matched = [p for p in given_root.glob(pattern) if p.is_file()]
        if not matched:
            raise UsageError(f"--include {pattern!r} matches no file under {root}: check the glob")
        for path in matched:
            rel = _named(path, given_root, root)
            if rel is None or not path.resolve().is_relative_to(root):
                raise UsageError(
                    f"--include {pattern!r} matches {path}, a link to a file outside {root}: "
                    "copy the file under the import root, or leave it out of the glob"
                )
            paths[rel] = path
    files = {rel: paths[rel].read_bytes() for rel in sorted(paths)}
    version = ".".join(str(v) for v in sys.version_info[:3])
    return Snapshot(files, version, _packages(files), patterns)


def _named(path: Path, given_root: Path, root: Path) -> str | None:
    """``path`` relative to the root as the user named it (or as it resolves), or None."""
    for base in (given_root, root):
        if path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return None


def _add_local_imports(
    paths: dict[str, Path], given_root: Path, root: Path, excluded: list[Path]
) -> None:
    """Add to ``paths`` the local modules its Python files import, wherever the import is
    (a function body too), and theirs in turn: a module only a step imports is served from
    the snapshot like the others, not from the working copy."""
    todo = [rel for rel in paths if rel.endswith(".py")]
    while todo:
        rel = todo.pop()
        try:
            tree = ast.parse(paths[rel].read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        package = PurePosixPath(rel).parent.parts
        for node in ast.walk(tree):
            dotted: list[str] = []
            if isinstance(node, ast.Import):
                dotted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                up = node.level - 1 if node.level else 0
                if up > len(package):
                    continue  # climbs out of the root
                base = package[: len(package) - up] if node.level else ()
                module = (*base, *node.module.split(".")) if node.module else tuple(base)
                dotted = [".".join(module)] if module else []
                dotted += [".".join((*module, a.name)) for a in node.names if a.name != "*"]
            for name in dotted:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # a package's __init__ runs too
                    for candidate in ("/".join(parts[:i]) + ".py",
                                      "/".join(parts[:i]) + "/__init__.py"):  # fmt: skip
                        path = given_root / candidate
                        if candidate in paths or not path.is_file():
                            continue
                        if _local(path.resolve(), root, excluded):
                            paths[candidate] = path
                            todo.append(candidate)


def _packages(files: dict[str, bytes]) -> dict[str, str]:
    """Versions of the installed distributions the captured Python files import."""
    local = {PurePosixPath(p).parts[0].removesuffix(".py") for p in files}
    names: set[str] = set()
    for path, content in files.items():
        if not path.endswith(".py"):
            continue
        try:
            tree = ast.parse(content)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.partition(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.partition(".")[0])
    names -= local | set(sys.stdlib_module_names) | {"zserve"}
    found: dict[str, str] = {}
    unknown = []
    for name in sorted(names):  # most distributions are named like their module: cheap
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            unknown.append(name)
    if unknown:  # packages_distributions reads every installed distribution's file list
        by_module = importlib.metadata.packages_distributions()
        for name in unknown:
            for dist in by_module.get(name, []):
                try:
                    found[dist] = importlib.metadata.version(dist)
                except importlib.metadata.PackageNotFoundError:
                    continue
    return dict(sorted(found.items()))


def installed_mismatches(packages: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """(distribution, deployed version, installed version or None) for each that differs."""
    out: list[tuple[str, str, str | None]] = []
    for dist, deployed in sorted(packages.items()):
        try:
            installed: str | None = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != deployed:
            out.append((dist, deployed, installed))
    return out


def pack(files: dict[str, bytes]) -> tuple[str, bytes]:
    """(the archive's address, its stored bytes): SHA-256 of a canonical tar, gzip-compressed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size = len(files[path])
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[path]))
    canonical = buf.getvalue()
    return hashlib.sha256(canonical).hexdigest(), gzip.compress(canonical, mtime=0)


def unpack(data: bytes) -> dict[str, bytes]:
    """The files of an archive ``pack`` made (relative paths checked: none climbs out)."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r") as tar:
        for info in tar.getmembers():
            parts = PurePosixPath(info.name).parts
            if not info.isfile() or info.name.startswith("/") or ".." in parts:
                raise UsageError(f"Code archive entry {info.name!r} is not a plain relative file")
            handle = tar.extractfile(info)
            assert handle is not None
            files[info.name] = handle.read()
    return files


def file_list(files: dict[str, bytes]) -> list[dict[str, Any]]:
    """[{"path", "size", "sha256"}] in path order: what ``deployments show`` lists."""
    return [
        {"path": p, "size": len(c), "sha256": hashlib.sha256(c).hexdigest()}
        for p, c in sorted(files.items())
    ]


def extract(home: str | Path, digest: str, data: bytes) -> Path:
    """``$ZSERVE_HOME/code/<digest>/`` with the archive's files (read-only, the owner's only),
    extracted once: into a temporary folder beside it, then renamed into place. The archive
    must be what ``digest`` says."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or (
        hashlib.sha256(gzip.decompress(data)).hexdigest() != digest
    ):
        raise UsageError(f"Code archive {digest[:80]!r} does not match its address: redeploy")
    base = private_dir(Path(home) / "code")
    target = base / digest
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest[:12]}-", dir=base))  # 0700
    try:
        for rel, content in unpack(data).items():
            path = tmp / rel
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(0o400)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a concurrent extraction that won
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
