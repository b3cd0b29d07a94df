"""Per-organization webhook endpoints and their secrets, held in memory by ingest.

The request path only reads the in-memory map: it never touches Postgres. A background task
reloads the map from Postgres at start, whenever `webhook_endpoints` changes (LISTEN/NOTIFY),
and every `INGEST_ENDPOINT_REFRESH_SECONDS` in case a notification was missed. Behind a
transaction-mode pooler (`pgbouncer=true` in `DATABASE_URL`) there is no LISTEN, which needs
a session of its own: the timer alone reloads the map. Each loaded map
is also written to a snapshot file (mode 0600, beside the spool) so that an ingest restarted
while Postgres is down still knows every endpoint.

During a rotation an endpoint has a previous secret that ends at a known time (decision
34). That time is kept in memory with the secret, so it is refused from then on even if no
reload happened since.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import asyncpg
import orjson

from calltrail_common.db import behind_transaction_pooler, connect
from calltrail_common.logging import get_logger
from calltrail_common.organizations import active_endpoints
from ingest.errors import Unavailable, UnknownEndpoint

log = get_logger(__name__)

NOTIFY_CHANNEL = "calltrail_webhook_endpoints"
_BACKOFF_MAX_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    org_id: str
    secrets: tuple[bytes, ...]  # accepted until a reload says otherwise
    expiring: tuple[tuple[bytes, float], ...] = ()  # (secret, Unix time it ends)

    def live_secrets(self, now: float) -> tuple[bytes, ...]:
        if not self.expiring:
            return self.secrets
        return self.secrets + tuple(secret for secret, until in self.expiring if now < until)


class _SnapshotEntry(TypedDict):
    org_id: str
    secrets: list[str]
    expiring: list[tuple[str, float]]


def _endpoint(entry: Mapping[str, Any]) -> Endpoint:
    """An endpoint from its snapshot entry (one written before rotation has no "expiring")."""
    return Endpoint(str(entry["org_id"]), tuple(s.encode() for s in entry["secrets"]),
                    tuple((s.encode(), float(until)) for s, until in entry.get("expiring", ())))


class EndpointDirectory:
    def __init__(self, database_url: str, snapshot_path: Path, refresh_seconds: float) -> None:
        self._database_url = database_url
        self._snapshot_path = snapshot_path
        self._refresh_seconds = refresh_seconds
        self._endpoints: dict[str, Endpoint] | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def loaded(self) -> bool:
        return self._endpoints is not None

    def lookup(self, endpoint_id: str) -> Endpoint:
        if self._endpoints is None:
            # Never loaded (no Postgres since start, no snapshot): we cannot tell a real
            # endpoint from a wrong one, and must not refuse a real one as unknown.
            raise Unavailable
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            raise UnknownEndpoint
        return endpoint

    def start(self) -> None:
        self._load_snapshot()
        self._task = asyncio.create_task(self._refresh_forever(), name="endpoint-refresh")

    async def close(self) -> None:
        self._closing = True  # see BrokerPublisher.close: cancellation may be swallowed
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError,
                                     asyncio.TimeoutError):
                await asyncio.wait_for(self._task, 5)

    async def refresh_now(self) -> None:
        """Reload once (tests and the CLI-free start-up path use this)."""
        connection = await connect(self._database_url)
        try:
            await self._reload(connection)
        finally:
            await connection.close()

    def _load_snapshot(self) -> None:
        try:
            data = orjson.loads(self._snapshot_path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as error:
            log.warning("endpoint_snapshot_unreadable", error=str(error))
            return
        try:
            self._endpoints = {endpoint_id: _endpoint(entry)
                               for endpoint_id, entry in data.items()}
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            log.warning("endpoint_snapshot_unreadable", error=type(error).__name__)
            return
        log.info("endpoint_snapshot_loaded", endpoints=len(self._endpoints))

    def _write_snapshot(self, snapshot: dict[str, _SnapshotEntry]) -> None:
        self._snapshot_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._snapshot_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(snapshot))
        os.replace(tmp, self._snapshot_path)

    async def _reload(self, connection: asyncpg.Connection) -> None:
        snapshot: dict[str, _SnapshotEntry] = {}
        for credential in await active_endpoints(connection):
            entry = snapshot.setdefault(credential.endpoint_id, _SnapshotEntry(
                org_id=credential.org_id, secrets=[], expiring=[]))
            if credential.valid_until is None:
                entry["secrets"].append(credential.secret)
            else:
                entry["expiring"].append((credential.secret,
                                          credential.valid_until.timestamp()))
        self._endpoints = {endpoint_id: _endpoint(entry)
                           for endpoint_id, entry in snapshot.items()}
        try:
            self._write_snapshot(snapshot)
        except OSError as error:
            log.warning("endpoint_snapshot_not_written", error=str(error))

    async def _refresh_forever(self) -> None:
        backoff = 0.5
        while not self._closing:
            connection: asyncpg.Connection | None = None
            try:
                connection = await connect(self._database_url)
                if not behind_transaction_pooler(self._database_url):
                    await connection.add_listener(NOTIFY_CHANNEL,
                                                  lambda *_: self._changed.set())
                while True:
                    self._changed.clear()
                    await self._reload(connection)
                    backoff = 0.5
                    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), self._refresh_seconds)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                log.warning("endpoint_refresh_failed", error=type(error).__name__,
                            retry_in=backoff)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), timeout=2)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_SECONDS)
