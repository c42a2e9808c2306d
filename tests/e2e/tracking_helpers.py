"""Servers with tracked capture on a real store (a SQLite file, or a PostgreSQL database of
its own when ``ZSERVE_TEST_POSTGRES_URL`` is set), and what the store holds afterwards."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.store.store_backends import POSTGRES_URL_ENV

BACKENDS = ("sqlite", "postgresql")
#: Read at import: the ``zhome`` fixture clears every ZSERVE_ variable for the test.
POSTGRES_ADMIN = os.environ.get(POSTGRES_URL_ENV)
TABLES = ("runs", "steps", "artifacts", "run_metadata")


@dataclass
class Tracked:
    """A store URL, the artifact directory, and a way to start servers on them."""

    url: str
    artifacts: Path
    start: Callable[..., Any]

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT COUNT(*) FROM {table}")[0][0])

    def counts(self) -> dict[str, int]:
        return {t: self.count(t) for t in TABLES}

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql), params)]
        finally:
            engine.dispose()

    def files(self) -> list[Path]:
        if not self.artifacts.exists():
            return []
        return sorted(p for p in self.artifacts.rglob("*") if p.is_file())

    def contents(self) -> list[str]:
        """The SHA-256 of each content kept apart from its row (over 16 KiB): files with
        SQLite, blobs in the database with PostgreSQL (which then has no files)."""
        if self.url.startswith("sqlite"):
            return [f.name for f in self.files()]
        assert self.files() == []
        return sorted(str(row[0]) for row in self.rows("SELECT sha256 FROM artifact_blobs"))


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def sqlite_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(sqlite_path(url)) as conn:
        return conn.execute(sql).fetchall()


class TcpProxy:
    """A TCP relay from a local port to ``upstream`` that can be cut and restored: how a test
    makes a real PostgreSQL unreachable for one server without stopping it for everyone."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        import socket

        self.upstream = upstream
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: Any = None
        self._conns: list[Any] = []

    def start(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener

        def pump(src: Any, dst: Any) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with __import__("contextlib").suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        def accept() -> None:
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                try:
                    server = socket.create_connection(self.upstream)
                except OSError:
                    client.close()
                    continue
                self._conns += [client, server]
                threading.Thread(target=pump, args=(client, server), daemon=True).start()
                threading.Thread(target=pump, args=(server, client), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        import socket

        if self._listener is not None:
            with __import__("contextlib").suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self._listener.close()
            self._listener = None
        for conn in self._conns:
            with __import__("contextlib").suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._conns.clear()
