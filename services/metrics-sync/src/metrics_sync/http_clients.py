"""The HTTP clients of metrics-sync's runs: one small client per run in progress."""

from __future__ import annotations

import contextlib

import httpx


class HttpClients:
    """One small httpx client for each run in progress, kept for the next run.

    A run's requests to Vapi go one after another, so one connection (kept alive) is all a
    run needs. One client shared by every run would hold a pool of some 2 x
    SYNC_CONCURRENCY connections, and httpcore walks its whole pool (is each connection
    idle, has it expired?) on every request and every answer: at 64 runs that walk was 40%
    of the service's CPU in `bench.metrics_sync` (py-spy). The clients share one TLS context.
    """

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = httpx.Timeout(timeout_seconds)
        self._limits = httpx.Limits(max_connections=2, max_keepalive_connections=1)
        self._tls = httpx.create_ssl_context()
        self._free: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    def take(self) -> httpx.AsyncClient:
        if self._free:
            return self._free.pop()
        client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits,
                                   verify=self._tls)
        self._all.append(client)
        return client

    def give_back(self, client: httpx.AsyncClient) -> None:
        self._free.append(client)

    async def aclose(self) -> None:
        for client in self._all:
            with contextlib.suppress(Exception):
                await client.aclose()
