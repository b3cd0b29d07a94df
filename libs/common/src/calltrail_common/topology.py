"""The whole RabbitMQ topology (contract section 4), declared in one idempotent place.

    {prefix}.events      topic exchange; ingest publishes every webhook to it with the
                         routing key `vapi.<message type>`, metrics-sync every call it
                         polls from Vapi's API with `sync.call-snapshot` (snapshots.py).
    {prefix}.dlx         direct exchange that dead letters land on.
    {prefix}.commands    topic exchange for commands to a service, e.g. `command.sync-now`
                         (a "sync now" request for metrics-sync).
    {prefix}.webhooks    direct exchange of outbound webhook deliveries: the dispatcher's
                         relay publishes each delivery to send with `webhook.delivery`
                         (decision 40), and its senders consume them from
                         {prefix}.dispatcher, retrying over about a day.
    {prefix}.live        fanout exchange of live call changes (decision 46): the call
                         processor publishes, after a batch commits, which calls it changed;
                         each api process reads them through a queue of its own,
                         {prefix}.live.<process> (exclusive, auto-delete, messages expire
                         within seconds, bounded: a live board resyncs from the database),
                         and fans them out to its open boards. Transient, never persistent.

Each consumer owns a `ConsumerQueue`:

    {prefix}.<name>                  quorum queue with a delivery limit; rejected or
                                     over-delivered messages dead-letter to {prefix}.dlx
                                     with routing key <name>.
    {prefix}.<name>.retry.<ms>       quorum queues holding a message for <ms> and then
                                     dead-lettering it back to {prefix}.<name>: transient
                                     failures are retried with back-off, never by spinning.
    {prefix}.<name>.dlq              quorum queue of messages that can never be processed;
                                     the consumer adds the reason in a header.

A partitioned consumer (the call processor) reads N partition queues instead of one:

    {prefix}.<name>.partitions       headers exchange, bound to the events exchange with the
                                     consumer's routing keys; routes on the `partition`
                                     header (envelope.py) to
    {prefix}.<name>.p00 .. p<N-1>    quorum queues with a single active consumer: however
                                     many replicas subscribe, one at a time receives a
                                     partition's events (calltrail's processor replicas
                                     share the partitions out, call_processor/partitions.py).
    {prefix}.<name>.unpartitioned    fanout exchange, the partitions exchange's alternate:
                                     an event without a valid partition (an older
                                     publisher) goes to {prefix}.<name>, the overflow queue
                                     every replica consumes, as retries do.

A consumer's retry delays may be replaced for one topology (`Topology.with_retry_delays`:
tests shorten the dispatcher's day of retries to seconds). Retry queues are named by their
delay, so shortened ones never clash with the usual ones under the same prefix.

Every process calls `declare_topology` at start: declaring what exists with the same
arguments is a no-op, so any number of replicas may do it at once. It also removes the
bindings of the overflow queue to the events exchange that an older topology made (events
then went straight to it), so an upgraded broker routes to the partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aiormq.abc import FieldValue

EVENTS_EXCHANGE = "events"
DEAD_LETTER_EXCHANGE = "dlx"
COMMANDS_EXCHANGE = "commands"
WEBHOOKS_EXCHANGE = "webhooks"
LIVE_EXCHANGE = "live"
# A live queue keeps what its api process has not read yet for this long, and this many at
# most (the oldest go first): a stalled process resyncs its boards, it never fills the broker.
LIVE_QUEUE_TTL_MS = 5_000
LIVE_QUEUE_MAX_MESSAGES = 10_000
WEBHOOK_DELIVERY_ROUTING_KEY = "webhook.delivery"
SYNC_NOW_ROUTING_KEY = "command.sync-now"
SNAPSHOT_ROUTING_KEY = "sync.call-snapshot"  # a call as Vapi's API returns it (snapshots.py)
# The header the partitions exchange routes on (no `x-`: headers exchanges ignore those).
PARTITION_HEADER = "partition"


def event_routing_key(message_type: str) -> str:
    return f"vapi.{message_type}"


@dataclass(frozen=True)
class ConsumerQueue:
    name: str
    binding_keys: tuple[str, ...]
    delivery_limit: int = 10
    retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000, 120_000)
    exchange: str = EVENTS_EXCHANGE  # the exchange the binding keys are on
    partitions: int = 0  # > 0: partition queues with a single active consumer each
    dead_letter_ttl_ms: int | None = None  # None: dead letters stay until replayed or purged


# Every consumer of the system, in one visible list. The processor's partition count bounds
# its useful replicas (KEDA's maxReplicaCount); changing it moves callers between
# partitions, which is safe (the rules are order-free) but briefly lets two replicas apply
# one caller's events.
CALL_PROCESSOR = ConsumerQueue(name="call-processor",
                               binding_keys=("vapi.#", SNAPSHOT_ROUTING_KEY), partitions=16)
METRICS_SYNC_COMMANDS = ConsumerQueue(name="metrics-sync.commands",
                                      binding_keys=(SYNC_NOW_ROUTING_KEY,),
                                      retry_delays_ms=(1_000, 5_000), exchange=COMMANDS_EXCHANGE)
# Outbound webhooks: a receiver that fails is tried again after each delay, 5 s to 10 h, about
# 26 hours in all, then the delivery is dead-lettered (and marked 'dead'). Its dead letters
# are kept a week, for reading: the delivery log holds the truth and "send again" publishes
# a delivery anew, so nothing replays them.
DISPATCHER = ConsumerQueue(name="dispatcher", binding_keys=(WEBHOOK_DELIVERY_ROUTING_KEY,),
                           exchange=WEBHOOKS_EXCHANGE, dead_letter_ttl_ms=7 * 86_400_000,
                           retry_delays_ms=(5_000, 30_000, 120_000, 600_000, 1_800_000,
                                            3_600_000, 7_200_000, 14_400_000, 28_800_000,
                                            36_000_000))
CONSUMERS: tuple[ConsumerQueue, ...] = (CALL_PROCESSOR, METRICS_SYNC_COMMANDS, DISPATCHER)


@dataclass(frozen=True)
class Topology:
    """Names of everything under one prefix."""

    prefix: str
    # (consumer name, retry delays) replacing a consumer's own: `with_retry_delays`.
    retry_delays_ms: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def with_retry_delays(self, consumer: ConsumerQueue, delays_ms: tuple[int, ...]
                          ) -> Topology:
        """This topology with `consumer` retried after `delays_ms` instead of its own."""
        if not delays_ms or any(delay <= 0 for delay in delays_ms):
            raise ValueError("retry delays must be positive milliseconds, at least one")
        others = tuple(item for item in self.retry_delays_ms if item[0] != consumer.name)
        return replace(self, retry_delays_ms=(*others, (consumer.name, tuple(delays_ms))))

    def consumer(self, consumer: ConsumerQueue) -> ConsumerQueue:
        """`consumer` as this topology declares it (its retry delays may be replaced)."""
        for name, delays in self.retry_delays_ms:
            if name == consumer.name:
                return replace(consumer, retry_delays_ms=delays)
        return consumer

    @property
    def consumers(self) -> tuple[ConsumerQueue, ...]:
        return tuple(self.consumer(consumer) for consumer in CONSUMERS)

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.{EVENTS_EXCHANGE}"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.{DEAD_LETTER_EXCHANGE}"

    @property
    def commands_exchange(self) -> str:
        return f"{self.prefix}.{COMMANDS_EXCHANGE}"

    @property
    def webhooks_exchange(self) -> str:
        return f"{self.prefix}.{WEBHOOKS_EXCHANGE}"

    @property
    def live_exchange(self) -> str:
        return f"{self.prefix}.{LIVE_EXCHANGE}"

    def live_queue(self, process: str) -> str:
        """One api process's queue of live call changes."""
        return f"{self.live_exchange}.{process}"

    def exchange(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def queue(self, consumer: ConsumerQueue) -> str:
        """The consumer's queue; for a partitioned consumer, its overflow queue."""
        return f"{self.prefix}.{consumer.name}"

    def partition_queue(self, consumer: ConsumerQueue, partition: int) -> str:
        return f"{self.queue(consumer)}.p{partition:02d}"

    def partition_queues(self, consumer: ConsumerQueue) -> list[str]:
        return [self.partition_queue(consumer, p) for p in range(consumer.partitions)]

    def partitions_exchange(self, consumer: ConsumerQueue) -> str:
        return f"{self.queue(consumer)}.partitions"

    def unpartitioned_exchange(self, consumer: ConsumerQueue) -> str:
        return f"{self.queue(consumer)}.unpartitioned"

    def retry_queue(self, consumer: ConsumerQueue, delay_ms: int) -> str:
        return f"{self.queue(consumer)}.retry.{delay_ms}"

    def dead_letter_queue(self, consumer: ConsumerQueue) -> str:
        return f"{self.queue(consumer)}.dlq"

    def work_queues(self, consumer: ConsumerQueue) -> list[str]:
        """Every queue holding the consumer's work to do: its partitions and its queue."""
        return [*self.partition_queues(consumer), self.queue(consumer)]

    def all_queues(self) -> list[str]:
        names = []
        for consumer in self.consumers:
            names.extend(self.work_queues(consumer))
            names.extend(self.retry_queue(consumer, d) for d in consumer.retry_delays_ms)
            names.append(self.dead_letter_queue(consumer))
        return names

    def all_exchanges(self) -> list[str]:
        partitioned = [name for consumer in CONSUMERS if consumer.partitions
                       for name in (self.partitions_exchange(consumer),
                                    self.unpartitioned_exchange(consumer))]
        return [self.events_exchange, self.dead_letter_exchange, self.commands_exchange,
                self.webhooks_exchange, self.live_exchange, *partitioned]


def _quorum(topology: Topology, consumer: ConsumerQueue, **extra: FieldValue
            ) -> dict[str, FieldValue]:
    return {"x-queue-type": "quorum", "x-delivery-limit": consumer.delivery_limit,
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-routing-key": topology.queue(consumer), **extra}


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
    webhooks = await channel.declare_exchange(
        topology.webhooks_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    await channel.declare_exchange(topology.live_exchange, aio_pika.ExchangeType.FANOUT,
                                   durable=True)
    exchanges = {EVENTS_EXCHANGE: events, COMMANDS_EXCHANGE: commands,
                 WEBHOOKS_EXCHANGE: webhooks}
    for consumer in topology.consumers:
        main_name = topology.queue(consumer)
        main = await channel.declare_queue(main_name, durable=True,
                                           arguments=_quorum(topology, consumer))
        source = exchanges[consumer.exchange]
        if consumer.partitions:
            await _declare_partitions(channel, topology, consumer, source, main)
        else:
            for key in consumer.binding_keys:
                await main.bind(source, routing_key=key)
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
        dlq_arguments: dict[str, FieldValue] = {"x-queue-type": "quorum"}
        if consumer.dead_letter_ttl_ms is not None:
            dlq_arguments["x-message-ttl"] = consumer.dead_letter_ttl_ms
        dlq = await channel.declare_queue(
            topology.dead_letter_queue(consumer), durable=True, arguments=dlq_arguments)
        await dlq.bind(dlx, routing_key=main_name)
    return events


async def declare_live_queue(channel: AbstractChannel, topology: Topology, process: str
                             ) -> aio_pika.abc.AbstractQueue:
    """The api process's own queue of live call changes, bound to the live exchange: it
    goes with the connection that declared it (exclusive, auto-delete), and holds only
    recent, transient messages (`LIVE_QUEUE_TTL_MS`, `LIVE_QUEUE_MAX_MESSAGES`)."""
    queue = await channel.declare_queue(
        topology.live_queue(process), durable=False, exclusive=True, auto_delete=True,
        arguments={"x-message-ttl": LIVE_QUEUE_TTL_MS,
                   "x-max-length": LIVE_QUEUE_MAX_MESSAGES, "x-overflow": "drop-head"})
    await queue.bind(topology.live_exchange)
    return queue


async def _declare_partitions(channel: AbstractChannel, topology: Topology,
                              consumer: ConsumerQueue, source: AbstractExchange,
                              overflow: aio_pika.abc.AbstractQueue) -> None:
    unpartitioned = await channel.declare_exchange(
        topology.unpartitioned_exchange(consumer), aio_pika.ExchangeType.FANOUT, durable=True)
    await overflow.bind(unpartitioned)
    partitions = await channel.declare_exchange(
        topology.partitions_exchange(consumer), aio_pika.ExchangeType.HEADERS, durable=True,
        arguments={"alternate-exchange": unpartitioned.name})
    for key in consumer.binding_keys:
        await partitions.bind(source, routing_key=key)
        await overflow.unbind(source, routing_key=key)  # an older topology's; a no-op since
    for partition in range(consumer.partitions):
        queue = await channel.declare_queue(
            topology.partition_queue(consumer, partition), durable=True,
            arguments=_quorum(topology, consumer, **{"x-single-active-consumer": True}))
        await queue.bind(partitions, arguments={"x-match": "all",
                                                PARTITION_HEADER: str(partition)})


async def delete_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Remove everything under the prefix (tests and benchmarks clean up with this)."""
    for name in topology.all_queues():
        await channel.queue_delete(name)
    for name in topology.all_exchanges():
        await channel.exchange_delete(name)
