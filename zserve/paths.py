"""Files only their owner can read: ``$ZSERVE_HOME`` and what zserve keeps in it (the store,
brokers with job parameters and outputs, logs, the server registry) hold other people's data.

Directories are made 0700 and files 0600; ones already there with looser modes are tightened
when they belong to this user (a folder the user chose for something else is left alone).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["broker_file", "private_dir", "private_file"]


def _tighten(path: Path, mode: int) -> None:
    """Drop the group and other bits of ``path`` if this user owns it. A file that cannot be
    changed (immutable, on a read-only file system) is left for the store's checks to report."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            path.chmod(stat.S_IMODE(st.st_mode) & mode)
    except OSError:
        return


def private_dir(path: str | Path, *, tighten: bool = True) -> Path:
    """``path`` as a directory (its parents too) that only its owner can enter; with
    ``tighten=False`` one that exists already keeps its mode (a folder the user chose)."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if tighten:
        _tighten(path, 0o700)
    return path


def private_file(path: str | Path) -> Path:
    """``path`` as a file (empty if it was not there) that only its owner can read or write;
    SQLite gives its -wal and -shm files the mode of the database file."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        _tighten(path, 0o600)
    return path


def broker_file(home: str | Path, deployment_id: str) -> Path:
    """Where the SQLite broker of a deployment's workers lives (kept between its servers)."""
    return Path(home) / "brokers" / f"{deployment_id}.db"
