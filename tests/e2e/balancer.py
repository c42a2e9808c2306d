"""``Balancer``: a small layer-4 load balancer for tests of several hosts, as a Kubernetes
Service or a TCP balancer with readiness checks behaves: each new connection goes to the first
host whose ``GET /readyz`` answers 200 (a draining host answers 503), and its bytes are copied
both ways until either side closes. A kept-alive connection stays with its host, so a host that
hands its clients over must close their connections (``zserve/server/handoff.py``).

It runs on an event loop of its own, in a thread; ``routed`` lists (host, first request line)
of every connection, for the test to check where each one went.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

__all__ = ["Balancer", "balancer"]


class Balancer:
    def __init__(self, hosts: list[str]) -> None:
        #: the hosts' base URLs, in order of preference
        self.hosts = hosts
        self.routed: list[tuple[str, str]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _ready(self, host: str) -> bool:
        parts = urlsplit(host)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port), 2
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: balancer\r\nConnection: close\r\n\r\n")
            status = await asyncio.wait_for(reader.readline(), 2)
            return status.split(b" ")[1:2] == [b"200"]
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def _pick(self) -> str:
        for host in self.hosts:
            if await self._ready(host):
                return host
        return self.hosts[-1]

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            first = await client_r.read(65536)
            if not first:
                return
            host = await self._pick()
            self.routed.append((host, first.split(b"\r\n", 1)[0].decode(errors="replace")))
            parts = urlsplit(host)
            try:
                host_r, host_w = await asyncio.open_connection(parts.hostname, parts.port)
            except OSError:
                return
            host_w.write(first)
            await asyncio.gather(_copy(client_r, host_w), _copy(host_r, client_w))
        finally:
            client_w.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from ``reader`` to ``writer`` until either side closes; then close ``writer``."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def balancer(hosts: list[str]) -> Iterator[Balancer]:
    """A started ``Balancer`` in front of ``hosts``, stopped after the block."""
    found = Balancer(hosts)
    found.start()
    try:
        yield found
    finally:
        found.stop()
