"""The processor's ceiling: a consumer that only archives each event and acknowledges it.

It does the least any call processor on this stack must do for every event, and nothing
else: consume the call-processor queue (prefetch twice the batch size, as the processor
does), take batches (`PROCESSOR_BATCH_SIZE`, waiting at most `PROCESSOR_BATCH_WAIT_MS`),
write each batch to `events` in one statement that archives them as the processor's
`WRITE_BATCH` does (the same columns: message id, organization from `x-org-id`, received
time, type, call id from the dedupe key, dedupe key, endpoint, raw body; the same conflict
rule), then acknowledge the batch with one multiple ack. Two batches are in flight. No
parsing of bodies, no organization resolution, no calls, leads or statistics, no metrics.

Run by `bench.processor` as `python -m bench.bare_consumer` with `DATABASE_URL`,
`AMQP_URL`, `AMQP_PREFIX`, `PROCESSOR_BATCH_SIZE` and `PROCESSOR_BATCH_WAIT_MS` in the
environment; SIGTERM stops it (exit status 0), unacknowledged messages go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import time

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from calltrail_common.envelope import (
    HEADER_DEDUPE_KEY,
    HEADER_ENDPOINT_ID,
    HEADER_MESSAGE_TYPE,
    HEADER_ORG_ID,
    HEADER_RECEIVED_AT,
)
from calltrail_common.process import run_worker
from calltrail_common.topology import CALL_PROCESSOR, Topology

BATCHES_IN_FLIGHT = 2
ARCHIVE_EVENTS = """
    INSERT INTO events (message_id, org_id, received_at, message_type, call_id, dedupe_key,
                        endpoint_id, body)
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::bytea[])
    ON CONFLICT (message_id) DO UPDATE SET org_id = EXCLUDED.org_id
        WHERE events.org_id IS NULL AND EXCLUDED.org_id IS NOT NULL"""


def archive_columns(messages: list[AbstractIncomingMessage]) -> list[list[object]]:
    rows = []
    for message in messages:
        headers = message.headers or {}
        dedupe_key = headers.get(HEADER_DEDUPE_KEY)
        rows.append((message.message_id, headers.get(HEADER_ORG_ID),
                     dt.datetime.fromtimestamp(headers[HEADER_RECEIVED_AT] / 1000, tz=dt.UTC),
                     headers.get(HEADER_MESSAGE_TYPE),
                     dedupe_key.split(":", 1)[0] if dedupe_key else None, dedupe_key,
                     headers.get(HEADER_ENDPOINT_ID), message.body))
    return [list(column) for column in zip(*rows, strict=True)]


async def next_batch(inbox: asyncio.Queue[AbstractIncomingMessage], size: int,
                     wait_seconds: float) -> list[AbstractIncomingMessage]:
    batch = [await inbox.get()]
    deadline = time.monotonic() + wait_seconds
    while len(batch) < size:
        if not inbox.empty():
            batch.append(inbox.get_nowait())
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(inbox.get(), remaining))
        except TimeoutError:
            break
    return batch


async def archive_and_ack(pool: asyncpg.Pool, batch: list[AbstractIncomingMessage],
                          previous: asyncio.Task[None] | None) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(ARCHIVE_EVENTS, *archive_columns(batch))
    if previous is not None:
        await previous  # acknowledge in delivery order: a multiple ack covers only this batch
    await batch[-1].ack(multiple=True)


async def consume() -> None:
    batch_size = int(os.environ["PROCESSOR_BATCH_SIZE"])
    batch_wait = int(os.environ["PROCESSOR_BATCH_WAIT_MS"]) / 1000
    topology = Topology(os.environ["AMQP_PREFIX"])
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=BATCHES_IN_FLIGHT,
                                     max_size=BATCHES_IN_FLIGHT)
    connection = await aio_pika.connect(os.environ["AMQP_URL"], timeout=10)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=batch_size * 2)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        for name in topology.work_queues(CALL_PROCESSOR):  # the partitions and the overflow
            queue = await channel.get_queue(name, ensure=False)
            await queue.consume(inbox.put)
        in_flight: set[asyncio.Task[None]] = set()
        previous: asyncio.Task[None] | None = None
        while True:
            batch = await next_batch(inbox, batch_size, batch_wait)
            while len(in_flight) >= BATCHES_IN_FLIGHT:
                done, in_flight = await asyncio.wait(in_flight,
                                                     return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            previous = asyncio.create_task(archive_and_ack(pool, batch, previous))
            in_flight.add(previous)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
        await pool.close()


async def main() -> None:
    task = asyncio.create_task(consume())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


if __name__ == "__main__":
    run_worker(main())  # the processor's own loop and collector settings: a fair ceiling
