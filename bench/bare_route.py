"""The stack's ceiling: one Starlette POST route that publishes the body with a confirm.

It does the least any durable ingest on this stack must do, and nothing else: read the
body, publish it to `{prefix}.events` (persistent, mandatory) on one aio-pika connection
with one publisher-confirm channel, await the confirm, answer 200 `{"ok":true}`. No
authentication, no parsing, no metrics, no spool.

Run by `bench.ingest` as `python -m bench.bare_route` with `BENCH_PORT`, `AMQP_URL` and
`AMQP_PREFIX` in the environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import aio_pika
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calltrail_common.topology import Topology, declare_topology
from calltrail_testkit.processes import serve_app

ROUTING_KEY = "vapi.status-update"
_OK = b'{"ok":true}'


def create_app(amqp_url: str, prefix: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connection = await aio_pika.connect(amqp_url, timeout=10)
        try:
            channel = await connection.channel(publisher_confirms=True)
            app.state.exchange = await declare_topology(channel, Topology(prefix))
            yield
        finally:
            await connection.close()

    async def receive(request: Request) -> Response:
        body = await request.body()
        message = aio_pika.Message(body, content_type="application/json",
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await request.app.state.exchange.publish(message, ROUTING_KEY, mandatory=True)
        return Response(_OK, media_type="application/json")

    return Starlette(routes=[Route("/webhooks/vapi", receive, methods=["POST"])],
                     lifespan=lifespan)


def main() -> None:
    serve_app(create_app(os.environ["AMQP_URL"], os.environ["AMQP_PREFIX"]),
              int(os.environ["BENCH_PORT"]))


if __name__ == "__main__":
    main()
