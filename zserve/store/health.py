"""Telling store failures from bugs: database errors become ``StoreUnavailable`` with their
reason on one line, and ``Store.check`` looks at what SQL alone cannot see (a SQLite file that
was deleted, replaced or made read-only, a directory that cannot be written)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from zserve.errors import StoreUnavailable, UsageError

__all__ = ["FileId", "check_directory", "check_sqlite_file", "file_id", "one_line", "translated"]

#: (device, inode) of a file.
FileId = tuple[int, int]


def one_line(exc: BaseException) -> str:
    """The driver's own message (no SQL, no parameters, no traceback) on one line: a server's
    primary message when the driver has one (psycopg's ``diag``), else the error's text."""
    reason = getattr(exc, "orig", None) or exc
    primary = getattr(getattr(reason, "diag", None), "message_primary", None)
    text = " ".join(str(primary or reason).split())
    return text or type(reason).__name__


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Database and file-system errors inside become ``StoreUnavailable("<doing>: <reason>")``;
    a constraint violation (a run id stored twice: the caller's mistake) a ``UsageError``. The
    errors of SQLite's own driver count too (``raw`` writes to it straight)."""
    try:
        yield
    except (IntegrityError, sqlite3.IntegrityError) as exc:
        raise UsageError(f"{doing}: {one_line(exc)}") from None
    except (DBAPIError, PoolTimeout, sqlite3.Error) as exc:
        raise StoreUnavailable(f"{doing}: {one_line(exc)}") from None
    except OSError as exc:
        raise StoreUnavailable(f"{doing}: {one_line(exc)}") from None


def file_id(path: Path) -> FileId | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def check_sqlite_file(path: Path, opened: FileId | None) -> None:
    """Raise ``StoreUnavailable`` when the database file is not the one the store opened, or
    when this process may not write it or its directory."""
    now = file_id(path)
    if now is None:
        raise StoreUnavailable(
            f"The store database {path} was deleted while this process had it open: what is "
            "written now is lost. Restore the file, or restart to start a new store there"
        )
    if opened is not None and now != opened:
        raise StoreUnavailable(
            f"The store database {path} was replaced by another file while this process had it "
            "open: restart to use the new file"
        )
    if not os.access(path, os.W_OK):
        raise StoreUnavailable(
            f"The store database {path} is read-only: make it writable (chmod u+w), or point "
            "ZSERVE_STORE_URL at a writable database"
        )
    check_directory(path.parent, "the store database's directory (SQLite creates its -wal and "
                    "-shm files there)")  # fmt: skip


def check_directory(directory: Path, what: str) -> None:
    """Raise ``StoreUnavailable`` unless ``directory``, or the nearest existing parent it would
    be created in, may be written."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreUnavailable(f"Cannot write {what}: {existing} is read-only; make it writable")
