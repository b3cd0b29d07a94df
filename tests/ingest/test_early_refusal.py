"""A request that cannot be authenticated is answered before its body is read (issue 17).

A raw client sends the head of a request with a Content-Length under the limit and no
body, then waits: a closed or unknown endpoint, a missing credential, a wrong header secret
or an HMAC without a timestamp must be answered while the body is still unsent. Only an
HMAC that passed its header checks waits for the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from calltrail_common.topology import Topology
from tests.conftest import WEBHOOK_SECRET, make_settings, serve_ingest
from tests.support.samples import sample_bytes

DECLARED_LENGTH = 60_000  # under the test's 64 KiB limit: not refused as too large
ANSWER_TIMEOUT = 5.0
BODY = sample_bytes("inbound-1-status-ringing")


@pytest.fixture
def settings(topology: Topology, spool_dir: Path, database_url: str):
    return make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                         database_url=database_url, ingest_max_body_bytes=64 * 1024)


class RawRequest:
    """One request written by hand on its own connection, its body held back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def answer(self, timeout: float = ANSWER_TIMEOUT) -> tuple[int, bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines
                      if line.lower().startswith("content-length:"))
        return int(lines[0].split()[1]), await self.reader.readexactly(length)

    async def no_answer_yet(self, wait: float = 0.3) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reader.read(1), wait)
            return False
        return True


@contextlib.asynccontextmanager
async def head_only(url: str, path: str, headers: dict[str, str],
                    length: int = DECLARED_LENGTH) -> AsyncIterator[RawRequest]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}",
             "Content-Type: application/json", f"Content-Length: {length}",
             *(f"{name}: {value}" for name, value in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    try:
        yield RawRequest(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def refused_before_the_body(url: str, path: str, headers: dict[str, str]
                                  ) -> tuple[int, dict[str, str]]:
    async with head_only(url, path, headers) as request:
        status, body = await request.answer()
    return status, orjson.loads(body)


def hmac_headers(body: bytes, timestamp: str | None) -> dict[str, str]:
    signed = body if timestamp is None else timestamp.encode() + b"." + body
    headers = {"X-Vapi-Signature": hmac.new(WEBHOOK_SECRET.encode(), signed,
                                            hashlib.sha256).hexdigest()}
    if timestamp is not None:
        headers["X-Timestamp"] = timestamp
    return headers


async def _until_endpoints_loaded(url: str) -> None:
    deadline = time.monotonic() + 10
    while (await refused_before_the_body(url, "/webhooks/vapi/ep_nosuch",
                                         {"X-Vapi-Secret": "x"}))[0] != 404:
        assert time.monotonic() < deadline, "ingest never loaded its endpoints"
        await asyncio.sleep(0.05)


async def test_unauthenticatable_requests_are_answered_before_their_body(settings) -> None:
    unauthorized = (401, {"error": "unauthorized"})
    async with serve_ingest(settings) as ingest:
        await _until_endpoints_loaded(ingest.url)
        assert await refused_before_the_body(
            ingest.url, "/webhooks/vapi/ep_nosuch",
            {"X-Vapi-Secret": WEBHOOK_SECRET}) == (404, {"error": "unknown_endpoint"})
        for headers in ({}, {"X-Vapi-Secret": "wrong"}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {WEBHOOK_SECRET}"},
                        hmac_headers(BODY, None),
                        hmac_headers(BODY, str(int(time.time()) - 6 * 60)),
                        {"X-Vapi-Signature": "not-hex", "X-Timestamp": str(int(time.time()))}):
            assert await refused_before_the_body(ingest.url, "/webhooks/vapi",
                                                 headers) == unauthorized, headers


async def test_a_closed_shared_endpoint_refuses_before_the_body(topology, spool_dir) -> None:
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             vapi_webhook_secret="")
    async with serve_ingest(settings) as ingest:
        for headers in ({"X-Vapi-Secret": "anything"}, {"Authorization": "Bearer x"},
                        hmac_headers(BODY, str(int(time.time())))):
            assert await refused_before_the_body(ingest.url, "/webhooks/vapi", headers) == (
                401, {"error": "unauthorized"})


async def test_what_can_be_authenticated_waits_for_its_body(settings) -> None:
    timestamp = str(int(time.time()))
    async with serve_ingest(settings) as ingest:
        for headers in ({"X-Vapi-Secret": WEBHOOK_SECRET},
                        {"Authorization": f"Bearer {WEBHOOK_SECRET}"},
                        hmac_headers(BODY, timestamp)):
            async with head_only(ingest.url, "/webhooks/vapi", headers,
                                 length=len(BODY)) as request:
                assert await request.no_answer_yet(), headers
                request.writer.write(BODY)
                await request.writer.drain()
                status, _ = await request.answer()
                assert status == 200, headers
