"""The endpoints the senders need, each read from Postgres at most once per few seconds.

An endpoint changes under the dispatcher (its secret rotated, its URL edited, disabled by a
person or by the dispatcher itself), so it is cached briefly, not for good: a change takes
effect within `ttl_seconds` everywhere. Concurrent misses for one endpoint share one read.
The secret is turned into its signer once per read (decoding it per delivery would cost).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from standardwebhooks import Webhook

from dispatcher.repository import EndpointRow

_FORGET_ABOVE = 10_000  # endpoints cached before the expired ones are dropped


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: uuid.UUID
    url: str
    disabled: bool
    signer: Webhook | None  # None: the stored secret is no `whsec_` secret (cannot sign)


def endpoint_from(row: EndpointRow) -> Endpoint:
    try:
        signer: Webhook | None = Webhook(row.secret)
    except Exception:  # binascii.Error, EmptyWebhookSecretError: whatever a bad secret raises
        signer = None
    return Endpoint(row.endpoint_id, row.url, row.disabled, signer)


class EndpointCache:
    def __init__(self, load: Callable[[uuid.UUID], Awaitable[EndpointRow | None]], *,
                 ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._ttl = ttl_seconds
        self._clock = clock
        self._cached: dict[uuid.UUID, tuple[float, Endpoint | None]] = {}
        self._loading: dict[uuid.UUID, asyncio.Future[Endpoint | None]] = {}

    async def get(self, endpoint_id: uuid.UUID) -> Endpoint | None:
        """The endpoint, or None when it no longer exists. Raises what loading raises."""
        while True:
            cached = self._cached.get(endpoint_id)
            if cached is not None and self._clock() - cached[0] < self._ttl:
                return cached[1]
            loading = self._loading.get(endpoint_id)
            if loading is None:
                return await self._read(endpoint_id)
            await asyncio.wait([loading])  # another caller's read; never cancels it
            if not loading.cancelled():
                return loading.result()
            # That caller was cancelled while reading: read again.

    async def _read(self, endpoint_id: uuid.UUID) -> Endpoint | None:
        future: asyncio.Future[Endpoint | None] = asyncio.get_running_loop().create_future()
        self._loading[endpoint_id] = future
        try:
            row = await self._load(endpoint_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved: nobody else may be waiting on it
            raise
        finally:
            del self._loading[endpoint_id]
        endpoint = endpoint_from(row) if row is not None else None
        if len(self._cached) >= _FORGET_ABOVE:
            self._forget_expired()
        self._cached[endpoint_id] = (self._clock(), endpoint)
        future.set_result(endpoint)
        return endpoint

    def mark_disabled(self, endpoint_id: uuid.UUID) -> None:
        """This replica disabled it: its next deliveries are skipped at once."""
        cached = self._cached.get(endpoint_id)
        if cached is not None and cached[1] is not None:
            self._cached[endpoint_id] = (cached[0], replace(cached[1], disabled=True))

    def _forget_expired(self) -> None:
        now = self._clock()
        for endpoint_id, (loaded_at, _) in list(self._cached.items()):
            if now - loaded_at >= self._ttl:
                del self._cached[endpoint_id]
