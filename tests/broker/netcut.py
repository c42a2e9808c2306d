"""A TCP proxy a test can cut, as a network partition would: the broker talks to Redis through
it; ``cut()`` drops every connection and refuses new ones until ``mend()``; ``swallow()``
passes requests on but loses every answer (a reply lost on its way: the client times out,
though Redis did the work), until ``mend()``."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

__all__ = ["NetCut"]


class NetCut:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._parts = parts
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.swallowing = False
        self._cuts = 0

    @property
    def url(self) -> str:
        """``url`` with the proxy's address in place of Redis's."""
        netloc = self._parts.netloc.rsplit("@", 1)
        where = f"127.0.0.1:{self.port}"
        return urlunsplit(
            self._parts._replace(netloc=f"{netloc[0]}@{where}" if len(netloc) == 2 else where)
        )

    async def start(self) -> None:
        await self.mend()

    def swallow(self) -> None:
        self.swallowing = True

    async def mend(self) -> None:
        self.swallowing = False
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self._cuts += 1
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links):
            link.close()
        self._links.clear()

    async def close(self) -> None:
        await self.cut()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)
        cuts = self._cuts
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._links.add(up_writer)
        if cuts != self._cuts:  # cut while this link was being made
            writer.close()
            up_writer.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # the test's loop is closing
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer, answers=True),
                return_exceptions=True,
            )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: bool = False
    ) -> None:
        try:
            while data := await reader.read(65536):
                if answers and self.swallowing:
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            self._links.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
