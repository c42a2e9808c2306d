"""Artifact files: captured values above ``INLINE_MAX_BYTES``, kept once per content under the
artifact directory as ``<sha256[:2]>/<sha256>`` (the SHA-256 of the content). A store with no
artifact directory keeps them in the database instead (``blobs``).

The content of an artifact is its ``data`` bytes, or the UTF-8 JSON text of its ``value`` (the
text the recorder measured and hashed). A file is written atomically (a temporary file in the
same directory, then ``os.replace``) before the rows that point at it are inserted; a file that
is already there is left alone, so identical contents share one file.

Who may delete a file is settled by a lock that writers and the pruner share (the store takes
it: SQLite's write lock, a PostgreSQL advisory lock): the pruner removes a file only while
holding it and only when no row refers to the file, and a writer, holding it, writes again any
file of its batch that has gone before it inserts its rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

from pydantic_core import to_json

from zserve.errors import StoreUnavailable
from zserve.paths import private_dir
from zserve.records import ArtifactRecord

__all__ = ["INLINE_MAX_BYTES", "ORPHAN_GRACE_S", "ArtifactFiles", "content_of", "relative_path"]

#: Contents up to this size stay in the database row; bigger ones go to a file, or a blob.
INLINE_MAX_BYTES = 16 * 1024

#: An unreferenced file (or a temporary file) younger than this is left alone by the sweep.
ORPHAN_GRACE_S = 60.0

_TMP_PREFIX = ".tmp-"
_SHARD = re.compile(r"^[0-9a-f]{2}$")
_NAME = re.compile(r"^[0-9a-f]{64}$")
_PATH = re.compile(r"^([0-9a-f]{2})/(\1[0-9a-f]{62})$")


def content_of(artifact: ArtifactRecord) -> bytes:
    """What downloading the artifact gives: its bytes, or its value as UTF-8 JSON text."""
    if artifact.data is not None:
        return artifact.data
    # the recorder hashes the same encoding: pydantic-core's compact JSON
    return to_json(artifact.value, fallback=repr)


def relative_path(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256}"


class ArtifactFiles:
    """The files under one artifact directory (``root``; None: this store has none)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _path(self, rel: str) -> Path:
        """The file of a relative path read from a row: only ``<sha[:2]>/<sha>``, never out of
        the directory (a row is not trusted to name any file)."""
        if not _PATH.match(rel):
            raise StoreUnavailable(f"An artifact row names an invalid file {rel!r}: not a SHA-256")
        return self._dir() / rel

    def _dir(self) -> Path:
        if self.root is None:
            raise StoreUnavailable(
                "An artifact of this store is kept in a file, and the store has no artifact "
                "directory: set ZSERVE_ARTIFACT_DIR to the directory its runs were recorded "
                "with (the same on every host)"
            )
        return self.root

    def put(self, content: bytes) -> str:
        """Store ``content`` (unless a file of it is there already); its relative path."""
        rel = relative_path(hashlib.sha256(content).hexdigest())
        target = self._path(rel)
        with contextlib.suppress(FileNotFoundError):
            if target.stat().st_size == len(content):
                return rel
        _write_atomically(target, content)
        return rel

    def ensure(self, rel: str, content: bytes) -> None:
        """Write the file of ``rel`` again if it has gone (a prune removed it meanwhile)."""
        target = self._path(rel)
        if not target.exists():
            _write_atomically(target, content)

    def read(self, rel: str, artifact_id: str) -> bytes:
        target = self._path(rel)
        try:
            content = target.read_bytes()
        except FileNotFoundError:
            raise StoreUnavailable(
                f"The file of artifact {artifact_id} is missing: {target} does not exist. It was "
                "deleted outside zserve, or the artifact directory is not the one the run was "
                "recorded with (ZSERVE_ARTIFACT_DIR)"
            ) from None
        if hashlib.sha256(content).hexdigest() != target.name:
            raise StoreUnavailable(
                f"The file of artifact {artifact_id} is damaged: the SHA-256 of {target} does "
                "not match its name. Delete the file (the artifact is lost) or restore it"
            )
        return content

    def old_files(self, before: float) -> tuple[list[str], list[Path]]:
        """Content files (relative paths) and temporary files last changed before ``before``."""
        if self.root is None or not self.root.is_dir():
            return [], []
        contents: list[str] = []
        temporary: list[Path] = []
        for shard in self.root.iterdir():
            if not _SHARD.match(shard.name) or not shard.is_dir():
                continue
            for entry in shard.iterdir():
                is_content = _NAME.match(entry.name) and entry.name[:2] == shard.name
                if not is_content and not entry.name.startswith(_TMP_PREFIX):
                    continue
                try:
                    changed = entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                if changed >= before:
                    continue
                if is_content:
                    contents.append(f"{shard.name}/{entry.name}")
                else:
                    temporary.append(entry)
        return contents, temporary

    def remove(self, rels: Iterable[str]) -> None:
        for rel in rels:
            if not _PATH.match(rel):
                continue  # never a file of ours: leave it
            with contextlib.suppress(FileNotFoundError):
                self._path(rel).unlink()


def _write_atomically(target: Path, content: bytes) -> None:
    private_dir(target.parent, tighten=False)
    tmp = target.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
    # os.open with 0o666: the umask applies, as for the database file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
