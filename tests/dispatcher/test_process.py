"""`calltrail-dispatcher` as a real process (the test kit's `Stack.dispatcher`, as the fault
suite and the benchmark start it): killed in the middle of the work, another one takes over
and nothing is lost; SIGTERM ends it cleanly."""

from __future__ import annotations

import asyncio
import signal
import uuid

from calltrail_testkit.stack import Stack
from calltrail_testkit.webhook_receiver import WebhookReceiver
from tests.conftest import AMQP_URL
from tests.support.dispatcher import Outbox, new_secret
from tests.support.processor import eventually


async def test_a_killed_dispatcher_is_replaced_and_nothing_is_lost(
        receiver: WebhookReceiver) -> None:
    async with Stack(amqp_url=AMQP_URL) as stack:
        [org] = await stack.create_organizations(1)
        secret = new_secret()
        endpoint = await stack.add_webhook_endpoint(org.org_id, receiver.url("hooks"), secret)
        receiver.behave("hooks", secret=secret, latency=0.05)
        connection = await stack.db()
        try:
            outbox = Outbox(connection, uuid.UUID(org.org_id))
            events = {str(e) for e in await outbox.events([endpoint], 300)}
            options = {"retry_delays_ms": (200,) * 10,
                       "env": {"WEBHOOKS_CONCURRENCY": "16", "LOG_LEVEL": "info"}}
            first = stack.dispatcher("dispatcher-1", **options)  # type: ignore[arg-type]
            first.start()
            await eventually(lambda: len(receiver.ids("hooks")) >= 50, 20)
            assert first.process is not None
            first.process.kill()  # SIGKILL: attempts in flight, messages unacknowledged
            await asyncio.to_thread(first.process.wait, 10)
            assert len(receiver.ids("hooks")) < len(events), "the work ended before the kill"

            second = stack.dispatcher("dispatcher-2", **options)  # type: ignore[arg-type]
            second.start()
            await eventually(lambda: receiver.ids("hooks") == events, 30)
            await eventually(lambda: _states(outbox, endpoint, {"succeeded": 300}), 10)
            assert second.process is not None
            second.process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.process.wait, 20) == 0, second.log_tail()
        finally:
            await connection.close()
    assert all(record.verified for record in receiver.received("hooks"))
    # At least once: what the killed one had in flight may have been sent again.
    assert len(receiver.received("hooks")) >= len(events)


async def _states(outbox: Outbox, endpoint: uuid.UUID, expected: dict[str, int]) -> bool:
    return await outbox.states(endpoint) == expected
