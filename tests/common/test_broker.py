"""Several broker addresses in `AMQP_URL`: every service connects to the first that answers."""

from __future__ import annotations

import time

import aio_pika
import pytest

from calltrail_common import broker
from tests.conftest import AMQP_URL, free_port


def test_amqp_url_is_one_address_or_a_comma_separated_list() -> None:
    assert broker.broker_addresses(" amqp://a:5672/ , amqp://b:5672/,") == [
        "amqp://a:5672/", "amqp://b:5672/"]
    assert broker.broker_addresses("amqp://u:p%2Cq@a:5672/") == ["amqp://u:p%2Cq@a:5672/"]
    with pytest.raises(ValueError, match="names no broker"):
        broker.broker_addresses(" , ")


async def test_connect_skips_a_dead_address_and_tries_it_last_for_a_while() -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nothing listens there
    for _ in range(4):  # from whichever address the random start picks
        connection = await broker.connect(f"{dead},{AMQP_URL}", heartbeat_seconds=5,
                                          connect_timeout_seconds=3)
        assert not connection.is_closed
        await connection.close()
    # It failed (at least when it came first): now it is tried after the live one.
    broker._failed_at[dead] = time.monotonic()
    assert broker._in_trying_order([dead, AMQP_URL]) == [AMQP_URL, dead]
    assert broker._in_trying_order([AMQP_URL, dead]) == [AMQP_URL, dead]


async def test_connect_raises_when_no_address_answers() -> None:
    dead = [f"amqp://guest:guest@127.0.0.1:{free_port()}/" for _ in range(2)]
    with pytest.raises((OSError, aio_pika.exceptions.AMQPError)):
        await broker.connect(",".join(dead), heartbeat_seconds=5, connect_timeout_seconds=2)
