"""One POST of a signed webhook, safe by default.

- Signed per Standard Webhooks with the `standardwebhooks` package: `webhook-id` is the
  event's id (the same at every attempt and to every endpoint: receivers deduplicate by it),
  `webhook-timestamp` the attempt's time, `webhook-signature` the endpoint's secret over
  `{id}.{timestamp}.{body}`.
- Where it may go: the URL is checked (`calltrail_common.outbound_targets.check_url`), and
  the host is resolved once, when a connection is made, by `CheckedNetwork`: every address
  it resolves to must be public (unless WEBHOOKS_ALLOW_PRIVATE_TARGETS), and the connection
  goes to the address that was checked, so a second resolution cannot rebind it. TLS keeps
  the host name (SNI and the certificate check) and connections are pooled by host name.
  No proxy from the environment is used (it would bypass the check).
- Redirects are not followed (a 3xx is a failed attempt); the whole attempt is bounded by
  WEBHOOKS_TIMEOUT_SECONDS; the answer's body is read as it streams in and dropped, at most
  WEBHOOKS_MAX_RESPONSE_BYTES of it (plus what one network read brings), never kept or
  logged.

Every failure becomes an `Answer` with a few words of why (`failure_text`), never an
exception: what the delivery becomes is the consumer's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx
from standardwebhooks import Webhook

from calltrail_common.outbound_targets import TargetRefused, check_url, refused_address
from dispatcher.attempts import Answer, status_error
from dispatcher.messages import CONTENT_TYPE, DeliveryMessage

USER_AGENT = "Calltrail-Webhooks/1"
Resolve = Callable[[str, int], Awaitable[list[str]]]


class UnusableSecret(Exception):
    """The endpoint's stored secret is no `whsec_` secret: nothing can be signed with it."""


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order (an address: itself)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        raise httpcore.ConnectError("host not found") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class CheckedNetwork(httpcore.AsyncNetworkBackend):
    """httpcore's network, connecting only to addresses that were checked."""

    def __init__(self, *, allow_private: bool, resolve: Resolve = resolve_host,
                 backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._allow_private = allow_private
        self._resolve = resolve
        self._backend = backend or httpcore.AnyIOBackend()

    # httpcore's interface names the parameter `timeout` (ASYNC109).
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port)
        if not self._allow_private:
            for address in addresses:
                reason = refused_address(address)
                if reason is not None:
                    raise TargetRefused(f"the host resolves to a {reason}")
        error: Exception = httpcore.ConnectError("host not found")
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failure:
                error = failure
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("a unix socket is no webhook target")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool on `CheckedNetwork`. httpx takes no network
    backend of its own, so the pool it built is replaced by the same pool on ours (the
    dispatcher's tests fail if that stops working: the private-target one)."""

    def __init__(self, network: CheckedNetwork, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=network)


def failure_text(error: BaseException) -> str:
    """Why an attempt got no usable answer, in a few words (no URL, host or body)."""
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(error, TargetRefused):
        return f"target refused: {error}"
    if isinstance(error, UnusableSecret):
        return "the endpoint's secret is unusable"
    causes = _causes(error)
    if any(isinstance(cause, ssl.SSLError) for cause in causes):
        return "TLS error"
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused"
    if isinstance(error, httpx.ConnectError):
        return "host not found" if "host not found" in str(error) else "connection failed"
    if isinstance(error, httpx.RemoteProtocolError):
        return "connection closed without a valid answer"
    if isinstance(error, httpx.TransportError):
        return "connection lost"
    return type(error).__name__


def _causes(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(found) < 10:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


class Sender:
    def __init__(self, *, timeout_seconds: float, max_response_bytes: int,
                 allow_private: bool, max_connections: int,
                 network: CheckedNetwork | None = None) -> None:
        self._timeout = timeout_seconds
        self._max_response_bytes = max_response_bytes
        self._allow_private = allow_private
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections, keepalive_expiry=30)
        network = network or CheckedNetwork(allow_private=allow_private)
        self._client = httpx.AsyncClient(
            transport=CheckedTransport(network, limits), follow_redirects=False,
            timeout=httpx.Timeout(timeout_seconds), trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, url: str, signer: Webhook | None, message: DeliveryMessage) -> Answer:
        started = time.perf_counter()
        status: int | None = None
        try:
            check_url(url, allow_private=self._allow_private)
            if signer is None:
                raise UnusableSecret
            async with asyncio.timeout(self._timeout):
                async with self._client.stream("POST", url, content=message.body,
                                               headers=signed_headers(signer, message)
                                               ) as response:
                    status = response.status_code
                    await read_bounded(response, self._max_response_bytes)
            error = status_error(status)
        except (TimeoutError, TargetRefused, UnusableSecret, httpx.HTTPError) as failure:
            # Once the status came, the receiver has answered: a body that then stalls or
            # breaks off changes nothing (retrying a 2xx would only send it twice).
            error = failure_text(failure) if status is None else status_error(status)
        return Answer(status, error, round((time.perf_counter() - started) * 1000))


def signed_headers(signer: Webhook, message: DeliveryMessage,
                   now: dt.datetime | None = None) -> dict[str, str]:
    moment = now or dt.datetime.now(dt.UTC)
    webhook_id = str(message.event_id)
    return {"content-type": CONTENT_TYPE, "user-agent": USER_AGENT,
            "webhook-id": webhook_id, "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": signer.sign(webhook_id, moment, message.body)}


async def read_bounded(response: httpx.Response, limit: int) -> int:
    """Read and drop the answer's body as it streams in, stopping once `limit` bytes came
    (then the connection is closed, not reused); the bytes read."""
    read = 0
    if limit <= 0:
        return read
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= limit:
            break
    return read
