"""``Store.check`` and error translation: a store that cannot be written says so with
``StoreUnavailable``, naming the problem and the fix, in one line; a bug stays a bug.

The read-only cases are made real: ``chmod``, and where that does not stop this process (root)
the immutable attribute (``chattr +i``), which stops root too; without either they are skipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from store_backends import SKIP_REASON, postgres_admin_url, postgres_database
from store_helpers import read_only, run_record

from zserve.errors import StoreUnavailable
from zserve.store import Store
from zserve.store.schema import PG_CONNECT_TIMEOUT_S


def _db(store: Store) -> Path:
    path = store._sqlite_path
    assert path is not None
    return path


def test_a_healthy_store_passes(store: Store) -> None:
    store.check()
    store.add_runs([run_record()])
    store.check()


def test_a_deleted_database_file_is_unavailable(store: Store) -> None:
    store.check()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{_db(store)}{suffix}").unlink(missing_ok=True)
    with pytest.raises(
        StoreUnavailable, match=r"zserve.db was deleted .* Restore the file, or restart"
    ):
        store.check()
    # The open connections would still write, to the deleted file: that is what check() is for.


def test_a_replaced_database_file_is_unavailable(store: Store, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    Store(f"sqlite:///{other}").close()
    os.replace(other, _db(store))
    with pytest.raises(StoreUnavailable, match=r"was replaced by another file .* restart"):
        store.check()


def test_a_read_only_database_file_is_unavailable(store: Store) -> None:
    with read_only(_db(store)):
        with pytest.raises(StoreUnavailable, match=r"zserve.db is read-only: make it writable"):
            store.check()
        # A store opened now gets a read-only connection: its write probe fails as well.
        with Store(store.url) as late:
            late._file_id = None
            with pytest.raises(StoreUnavailable, match="read-only"):
                late.check()
            with pytest.raises(StoreUnavailable, match="readonly database"):
                late.add_runs([run_record()])
    store.check()


def test_a_read_only_directory_is_unavailable(store: Store) -> None:
    with (
        read_only(_db(store).parent),
        pytest.raises(StoreUnavailable, match=r"-wal and -shm files there.*read-only"),
    ):
        store.check()
    store.check()


def test_a_read_only_artifact_directory_is_unavailable(store_url: str, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    with (
        Store(store_url, artifact_dir=str(files / "sub")) as store,
        read_only(files),
        pytest.raises(StoreUnavailable, match=r"Cannot write the artifact directory: .*files"),
    ):
        store.check()


def test_a_store_without_its_schema_version_is_unavailable(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(StoreUnavailable, match="has no schema version"):
        store.check()


def test_database_errors_are_store_unavailable_in_one_line(store: Store) -> None:
    record = run_record()
    store.add_runs([record])
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE run_metadata"))
    with pytest.raises(StoreUnavailable) as info:
        store.add_runs([run_record()])
    message = str(info.value)
    assert message.startswith("Cannot write runs to the store at ")
    assert "run_metadata" in message and "\n" not in message and "INSERT" not in message
    with pytest.raises(StoreUnavailable, match=r"Cannot read the store at .*run_metadata"):
        store.get_run(record.run_id)


def test_a_locked_database_is_waited_for_not_failed(store: Store) -> None:
    holder = sqlite3.connect(_db(store), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process writing for a while
    threading.Timer(0.5, holder.rollback).start()
    started = time.monotonic()
    store.add_runs([run_record()])
    assert time.monotonic() - started >= 0.4
    holder.close()


class _Proxy:
    """A TCP forwarder to PostgreSQL: stopping it is the server going away, for the client."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(): close() alone does not
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.postgresql
def test_a_stopped_postgresql_is_unavailable_quickly() -> None:
    from sqlalchemy import make_url

    admin = postgres_admin_url()
    if admin is None:
        pytest.skip(SKIP_REASON)
    with postgres_database(admin) as url:
        real = make_url(url)
        proxy = _Proxy(real.host or "127.0.0.1", real.port or 5432)
        via_proxy = real.set(host="127.0.0.1", port=proxy.port)
        with Store(via_proxy.render_as_string(hide_password=False)) as store:
            with store.engine.connect() as conn:
                dsn = conn.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
            assert f"connect_timeout={PG_CONNECT_TIMEOUT_S}" in dsn
            store.add_runs([run_record()])
            store.check()
            proxy.stop()
            for attempt in (store.check, lambda: store.add_runs([run_record()])):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as info:
                    attempt()
                assert time.monotonic() - started < PG_CONNECT_TIMEOUT_S + 1
                assert "\n" not in str(info.value)
                assert "Connection refused" in str(info.value) or "connect" in str(info.value)
