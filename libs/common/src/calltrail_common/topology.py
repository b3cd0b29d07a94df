"""The whole RabbitMQ topology (contract section 4), declared in one idempotent place.

    {prefix}.events      topic exchange; ingest publishes every webhook to it with the
                         routing key `vapi.<message type>`, metrics-sync every call it
                         polls from Vapi's API with `sync.call-snapshot` (snapshots.py).
    {prefix}.dlx         direct exchange that dead letters land on.
    {prefix}.commands    topic exchange for commands to a service, e.g. `command.sync-now`
                         (a "sync now" request for metrics-sync).

Each consumer owns a `ConsumerQueue`:

    {prefix}.<name>                  quorum queue bound to the routing keys it uses, with a
                                     delivery limit; rejected or over-delivered messages
                                     dead-letter to {prefix}.dlx with routing key <name>.
    {prefix}.<name>.retry.<ms>       quorum queues holding a message for <ms> and then
                                     dead-lettering it back to the main queue: transient
                                     failures are retried with back-off, never by spinning.
    {prefix}.<name>.dlq              quorum queue of messages that can never be processed;
                                     the consumer adds the reason in a header.

Every process calls `declare_topology` at start: declaring what exists with the same
arguments is a no-op, so any number of replicas may do it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

EVENTS_EXCHANGE = "events"
DEAD_LETTER_EXCHANGE = "dlx"
COMMANDS_EXCHANGE = "commands"
SYNC_NOW_ROUTING_KEY = "command.sync-now"
SNAPSHOT_ROUTING_KEY = "sync.call-snapshot"  # a call as Vapi's API returns it (snapshots.py)
# Headers ingest puts on every event message.
HEADER_RECEIVED_AT = "x-received-at"  # epoch milliseconds, when ingest received the webhook
HEADER_ENDPOINT_ID = "x-endpoint-id"  # "shared" or the organization's endpoint id
HEADER_ORG_ID = "x-org-id"  # set when the endpoint decides the organization
HEADER_DEDUPE_KEY = "x-dedupe-key"  # call.id + type + status, where present
HEADER_MESSAGE_TYPE = "x-message-type"
HEADER_DEAD_LETTER_REASON = "x-dead-letter-reason"
SHARED_ENDPOINT = "shared"


def event_routing_key(message_type: str) -> str:
    return f"vapi.{message_type}"


@dataclass(frozen=True)
class ConsumerQueue:
    name: str
    binding_keys: tuple[str, ...]
    delivery_limit: int = 10
    retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000, 120_000)
    exchange: str = EVENTS_EXCHANGE  # the exchange the binding keys are on


# Every consumer of the system, in one visible list.
CALL_PROCESSOR = ConsumerQueue(name="call-processor",
                               binding_keys=("vapi.#", SNAPSHOT_ROUTING_KEY))
METRICS_SYNC_COMMANDS = ConsumerQueue(name="metrics-sync.commands",
                                      binding_keys=(SYNC_NOW_ROUTING_KEY,),
                                      retry_delays_ms=(1_000, 5_000), exchange=COMMANDS_EXCHANGE)
CONSUMERS: tuple[ConsumerQueue, ...] = (CALL_PROCESSOR, METRICS_SYNC_COMMANDS)


@dataclass(frozen=True)
class Topology:
    """Names of everything under one prefix."""

    prefix: str

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.{EVENTS_EXCHANGE}"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.{DEAD_LETTER_EXCHANGE}"

    @property
    def commands_exchange(self) -> str:
        return f"{self.prefix}.{COMMANDS_EXCHANGE}"

    def exchange(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def queue(self, consumer: ConsumerQueue) -> str:
        return f"{self.prefix}.{consumer.name}"

    def retry_queue(self, consumer: ConsumerQueue, delay_ms: int) -> str:
        return f"{self.queue(consumer)}.retry.{delay_ms}"

    def dead_letter_queue(self, consumer: ConsumerQueue) -> str:
        return f"{self.queue(consumer)}.dlq"

    def all_queues(self) -> list[str]:
        names = []
        for consumer in CONSUMERS:
            names.append(self.queue(consumer))
            names.extend(self.retry_queue(consumer, d) for d in consumer.retry_delays_ms)
            names.append(self.dead_letter_queue(consumer))
        return names

    def all_exchanges(self) -> list[str]:
        return [self.events_exchange, self.dead_letter_exchange, self.commands_exchange]


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare every exchange, queue and binding; return the events exchange."""
    events = await channel.declare_exchange(
        topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    commands = await channel.declare_exchange(
        topology.commands_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    exchanges = {EVENTS_EXCHANGE: events, COMMANDS_EXCHANGE: commands}
    for consumer in CONSUMERS:
        main_name = topology.queue(consumer)
        main = await channel.declare_queue(
            main_name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": consumer.delivery_limit,
                "x-dead-letter-exchange": topology.dead_letter_exchange,
                "x-dead-letter-routing-key": main_name,
            },
        )
        for key in consumer.binding_keys:
            await main.bind(exchanges[consumer.exchange], routing_key=key)
        for delay_ms in consumer.retry_delays_ms:
            await channel.declare_queue(
                topology.retry_queue(consumer, delay_ms),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": delay_ms,
                    # Default exchange: the routing key is the main queue's name.
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": main_name,
                },
            )
        dlq = await channel.declare_queue(
            topology.dead_letter_queue(consumer),
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        await dlq.bind(dlx, routing_key=main_name)
    return events


async def delete_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Remove everything under the prefix (tests and benchmarks clean up with this)."""
    for name in topology.all_queues():
        await channel.queue_delete(name)
    for name in topology.all_exchanges():
        await channel.exchange_delete(name)
