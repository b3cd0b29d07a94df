"""A TCP proxy put between a service and PostgreSQL or RabbitMQ to cut it off (tests, `make
chaos`), or to put it a few milliseconds away (`bench.scale`).

`cut()` closes every open connection and refuses new ones (the server looks down);
`stall()` keeps every connection open but lets nothing through, and new connections hang
(a network partition: the peer is gone without a FIN or RST, only heartbeats and timeouts
can tell); `restore()` drops what was stalled and forwards connections again. The shared
servers themselves are never stopped.

With `delay_seconds`, every chunk read on either side is written to the other that much
later, in order: a one-way latency, as across a network (this kernel has no netem). As a
process of its own, so its CPU is not the benchmark's:

    python -m calltrail_testkit.tcp_proxy --port 0 --target 127.0.0.1:5432 --delay-ms 5

prints the port it listens on, then forwards until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal

import uvloop


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *,
                 delay_seconds: float = 0.0) -> None:
        self._target = (target_host, target_port)
        self._delay = delay_seconds
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
        if self._delay:
            await self._pump_later(reader, writer)
            return
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if self._stalled:
                    continue  # lost in the partition
                writer.write(data)
                await writer.drain()

    async def _pump_later(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """Each chunk `delay_seconds` after it was read, in the order read."""
        loop = asyncio.get_running_loop()
        due: collections.deque[tuple[float, bytes]] = collections.deque()
        arrived = asyncio.Event()
        ended = False

        async def deliver() -> None:
            while True:
                while not due:
                    if ended:
                        return  # all that was read before the peer closed is written
                    arrived.clear()
                    await arrived.wait()
                at, data = due.popleft()
                if (wait := at - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not self._stalled:
                    writer.write(data)
                    await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(65536):
                    due.append((loop.time() + self._delay, data))
                    arrived.set()
            ended = True
            arrived.set()
            with contextlib.suppress(OSError):
                await delivering
        finally:
            delivering.cancel()
            with contextlib.suppress(BaseException):
                await delivering


async def _serve(port: int, target: str, delay_ms: float) -> None:
    host, _, target_port = target.rpartition(":")
    proxy = TcpProxy(host, int(target_port), delay_seconds=delay_ms / 1000)
    await proxy.start(port)
    print(proxy.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m calltrail_testkit.tcp_proxy",
                                     description="Forward TCP, a few milliseconds late.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    args = parser.parse_args()
    uvloop.run(_serve(args.port, args.target, args.delay_ms))


if __name__ == "__main__":
    main()
