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
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

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
                stream = await self._backend.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failure:
                error = failure
            else:
                return PooledStream(stream)
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("a unix socket is no webhook target")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


# A pooled connection used this recently is taken to be open without asking the socket.
FRESH_SECONDS = 1.0


class PooledStream(httpcore.AsyncNetworkStream):
    """A connection's stream, cheap to ask whether its peer hung up.

    httpcore asks that of every idle connection in the pool each time it places a request
    (`is_readable`), and anyio's stream answers with a getpeername and a poll: with 64
    connections to a receiver that was most of the CPU of a request. Here the socket is
    looked up once, and a connection that read or wrote within `FRESH_SECONDS` is taken as
    open (a server closing one that soon is rare; the attempt would then fail and be
    retried like any other)."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.get_extra_info("socket")
        self._used_at = time.monotonic()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        data = await self._stream.read(max_bytes, timeout)
        self._used_at = time.monotonic()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._stream.write(buffer, timeout)
        self._used_at = time.monotonic()

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None  # noqa: ASYNC109
                        ) -> httpcore.AsyncNetworkStream:
        tls = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        wrapped = PooledStream(tls)
        wrapped._socket = self._socket
        return wrapped

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._socket
        if info == "is_readable":
            if time.monotonic() - self._used_at < FRESH_SECONDS:
                return False
            return _readable(self._socket)
        return self._stream.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """Whether the socket has something to read (for an idle connection: the peer closed)."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


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


# Connections per pool: httpcore's pool looks at every connection for each idle one each
# time it places or ends a request (quadratic), so a pool of 256 connections to a busy
# receiver spent most of a request's CPU there. Several small pools do not.
POOL_CONNECTIONS = 16


class PooledTransport(httpx.AsyncBaseTransport):
    """`CheckedTransport`s of at most `POOL_CONNECTIONS` connections each; a request goes to
    the pool with the fewest requests in flight (the first when tied, so light traffic keeps
    reusing one pool's connections)."""

    def __init__(self, network: CheckedNetwork, max_connections: int) -> None:
        count = max(1, -(-max_connections // POOL_CONNECTIONS))
        size = -(-max_connections // count)
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size,
                              keepalive_expiry=30)
        self._pools = [CheckedTransport(network, limits) for _ in range(count)]
        self._in_flight = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._pools)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self._in_flight[index] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Released(response.stream, lambda: self._release(index))
        return response

    def _release(self, index: int) -> None:
        self._in_flight[index] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Released(httpx.AsyncByteStream):
    """A response's stream that says when it is closed (its request left the pool)."""

    def __init__(self, stream: httpx.AsyncByteStream, released: Callable[[], None]) -> None:
        self._stream = stream
        self._released: Callable[[], None] | None = released

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            released, self._released = self._released, None
            if released is not None:
                released()


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
        network = network or CheckedNetwork(allow_private=allow_private)
        self._client = httpx.AsyncClient(
            transport=PooledTransport(network, max_connections), follow_redirects=False,
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
