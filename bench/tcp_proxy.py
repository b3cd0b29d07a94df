"""A TCP proxy put between a service and PostgreSQL or RabbitMQ to cut it off (tests, `make chaos`).

`cut()` closes every open connection and refuses new ones (the server looks down);
`stall()` keeps every connection open but lets nothing through, and new connections hang
(a network partition: the peer is gone without a FIN or RST, only heartbeats and timeouts
can tell); `restore()` drops what was stalled and forwards connections again. The shared
servers themselves are never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stalled = False
        self._unstalled = asyncio.Event()
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self._stalled = False
        self._unstalled.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stall(self) -> None:
        self._stalled = True
        self._unstalled.clear()

    async def restore(self) -> None:
        if self._stalled:
            self._stalled = False
            self._unstalled.set()
            for writer in list(self._writers):
                writer.transport.abort()
        if self._server is None:
            await self.start(self.port)

    async def close(self) -> None:
        await self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stalled:  # hold the connection, forward nothing, until restore() or cut()
            self._writers.add(writer)
            await self._unstalled.wait()
            self._writers.discard(writer)
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer)),
                 asyncio.ensure_future(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if self._stalled:
                    continue  # lost in the partition
                writer.write(data)
                await writer.drain()
