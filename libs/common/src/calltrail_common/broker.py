"""RabbitMQ connections that notice when they are gone, for every service.

aio-pika's `Connection.closed()` resolves only after an explicit `close()`: a connection
reset by the network, a broker restart or missed heartbeats leave it pending for ever, and a
consumer waiting on it stays idle for good. So no service waits on it. Each opens its
connection with `connect` (heartbeats on, so a half-open connection is found within a few
seconds) and waits on `watch(...)`, which resolves with a reason as soon as the connection
or any watched channel closes, however it closed, or the broker cancels a consumer (a
deleted queue). The service then drops everything and reconnects with back-off.

`AMQP_URL` names one broker or several: the nodes of a cluster, comma-separated
(`amqp://u:p@rabbit-1:5672/,amqp://u:p@rabbit-2:5672/`; a comma inside a password is written
`%2C`). `connect` tries them in turn, from a random one so replicas spread over the nodes,
and puts last the addresses that failed lately, so a reconnect after a node is lost goes to
a live one first instead of waiting on the dead one's connect timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection


def with_heartbeat(url: str, heartbeat_seconds: int) -> str:
    """`url` asking for `heartbeat_seconds` heartbeats, unless it names its own."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "heartbeat" for name, _ in query):
        return url
    query.append(("heartbeat", str(heartbeat_seconds)))
    return urlunsplit(parts._replace(query=urlencode(query)))


# An address that failed this recently is tried after the others.
FAILED_ADDRESS_MEMORY_SECONDS = 30.0
_failed_at: dict[str, float] = {}


def broker_addresses(url: str) -> list[str]:
    """The broker URLs `AMQP_URL` names: one, or a cluster's nodes separated by commas."""
    addresses = [part.strip() for part in url.split(",") if part.strip()]
    if not addresses:
        raise ValueError("AMQP_URL names no broker")
    return addresses


def _in_trying_order(addresses: list[str]) -> list[str]:
    start = random.randrange(len(addresses))
    rotated = addresses[start:] + addresses[:start]
    now = time.monotonic()

    def failed_lately(address: str) -> bool:
        return now - _failed_at.get(address, float("-inf")) < FAILED_ADDRESS_MEMORY_SECONDS

    return sorted(rotated, key=failed_lately)  # stable: the rotation stays within each half


async def connect(url: str, *, heartbeat_seconds: int,
                  connect_timeout_seconds: float = 10.0) -> AbstractConnection:
    """A plain (not robust) connection to the first broker of `url` that answers; the
    caller owns reconnecting, with `watch`. Raises the last address's error when none does.
    """
    error: BaseException | None = None
    for address in _in_trying_order(broker_addresses(url)):
        try:
            return await aio_pika.connect(with_heartbeat(address, heartbeat_seconds),
                                          timeout=connect_timeout_seconds)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as failure:
            _failed_at[address] = time.monotonic()
            error = failure
    assert error is not None  # broker_addresses never returns an empty list
    raise error


async def watch(connection: AbstractConnection, *channels: AbstractChannel
                ) -> asyncio.Future[str]:
    """A future that resolves, with why, when the link is no longer usable.

    It resolves when `connection` or any of `channels` closes (reset, heartbeat timeout,
    broker shutdown, a channel closed by the broker for a protocol error) or when the broker
    cancels a consumer on one of `channels`. Never cancelled by the callbacks it registers;
    the caller cancels it when done.
    """
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def mark(reason: str) -> None:
        if not lost.done():
            lost.set_result(reason)

    def on_connection_close(_sender: Any, error: BaseException | None = None) -> None:
        mark(f"connection closed ({type(error).__name__ if error else 'no error'})")

    def on_channel_close(_sender: Any, error: BaseException | None = None) -> None:
        mark(f"channel closed ({type(error).__name__ if error else 'no error'})")

    def on_consumer_cancel(_frame: Any) -> None:
        mark("consumer cancelled by the broker")

    connection.close_callbacks.add(on_connection_close)
    for channel in channels:
        channel.close_callbacks.add(on_channel_close)
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(on_consumer_cancel)
    if connection.is_closed or any(channel.is_closed for channel in channels):
        mark("closed before it was watched")
    return lost


async def close_quietly(connection: AbstractConnection | None,
                        wait_seconds: float = 2.0) -> None:
    """Close `connection` if it is open, waiting at most `wait_seconds`; never raises (a
    link that is already gone is what we wanted)."""
    if connection is None or connection.is_closed:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), wait_seconds)
