"""schemathesis against both `/openapi.json` documents, the tenant api's and ingest's: the
real apps served by uvicorn over a real database and RabbitMQ, fed inputs generated from the
documents. No input may get a 5xx (ingest's 503 only when nothing can make an event
durable, which does not happen here), and answers must match the documents.

The servers run in a thread with their own event loop: schemathesis calls them with a
blocking client from the test's thread.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.adapter.validators import validate_v3

from api.app import create_app
from calltrail_common import db
from calltrail_common.crypto import KeyRing
from calltrail_common.organizations import create_organization
from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi, serve
from ingest.app import operations
from ingest.openapi import openapi_document
from tests.api.conftest import ENCRYPTION_KEY, insert_call, insert_lead, serve_api
from tests.conftest import (
    POSTGRES_ADMIN_URL,
    WEBHOOK_SECRET,
    _admin_execute,
    _delete_topology,
    make_settings,
    serve_ingest,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
BOUNDED = settings(max_examples=30, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))


@dataclass
class Stack:
    api_url: str
    ingest_url: str
    token: str
    endpoint_id: str
    org_secret: str


class LoopThread:
    """An event loop in a thread of its own, running what the test hands it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="servers",
                                        daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _seed(database_url: str) -> tuple[str, str, str]:
    connection = await db.connect(database_url)
    try:
        org = await create_organization(connection, "Schemathesis Org")
        other = await create_organization(connection, "Other Org")
        now = datetime.now(UTC)
        for org_id in (org.org_id, other.org_id):
            lead_id = await insert_lead(connection, org_id, "+14155550111", name="Ada Lovelace",
                                        email="ada@example.com")
            for minutes in range(3):
                await insert_call(connection, org_id, lead_id=lead_id,
                                  created_at=now - timedelta(minutes=minutes),
                                  transcript="AI: Hello\nUser: hi", summary="a short call")
            await connection.execute(
                "INSERT INTO daily_stats_shards (org_id, day, calls, inbound, new_leads, "
                "duration_seconds, cost) VALUES ($1, $2, 3, 3, 1, 180, $3)",
                org_id, now.date(), Decimal("0.36"))
        return org.api_token, org.endpoint_id, org.webhook_secret
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def stack(template_database: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    name = f"calltrail_test_{uuid.uuid4().hex[:12]}"
    database_url = f"{POSTGRES_ADMIN_URL}/{name}"
    topology = Topology(f"test-{uuid.uuid4().hex[:10]}")
    spool_dir: Path = tmp_path_factory.mktemp("schemathesis") / "spool"
    loop = LoopThread()
    fake = FakeVapi(seed=5)
    api_key = f"key-{uuid.uuid4()}"
    fake.add_account(api_key, phone_numbers=1)
    try:
        loop.run(_admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
        token, endpoint_id, org_secret = loop.run(_seed(database_url))
        with serve(fake) as vapi_url:
            api = serve_api(make_settings(
                database_url=database_url, amqp_prefix=topology.prefix,
                encryption_key=ENCRYPTION_KEY, vapi_api_base_url=vapi_url,
                vapi_request_timeout_seconds=3, log_level="warning"))
            ingest = serve_ingest(make_settings(
                database_url=database_url, amqp_prefix=topology.prefix, spool_dir=spool_dir,
                ingest_max_body_bytes=64 * 1024, log_level="warning"))
            api_url = loop.run(api.__aenter__())
            running_ingest = loop.run(ingest.__aenter__())
            try:
                # A connected account, so the sync routes have something to answer about.
                connected = httpx.post(f"{api_url}/api/vapi/connect", json={"apiKey": api_key},
                                       headers={"Authorization": f"Bearer {token}"})
                assert connected.status_code == 200, connected.text
                yield Stack(api_url, running_ingest.url, token, endpoint_id, org_secret)
            finally:
                loop.run(ingest.__aexit__(None, None, None))
                loop.run(api.__aexit__(None, None, None))
    finally:
        loop.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        loop.run(_delete_topology(topology))
        loop.close()


def _api_document() -> dict[str, Any]:
    settings = make_settings(encryption_key=ENCRYPTION_KEY)
    return create_app(settings, KeyRing.from_settings(settings)).openapi()


# Built from the code, as each app builds the one it serves (a test below compares them):
# schemathesis's lazy loading from a fixture does not run under pytest 9.
API_DOCUMENT = _api_document()
INGEST_DOCUMENT = openapi_document(operations())
api_schema = schemathesis.openapi.from_dict(API_DOCUMENT)
ingest_schema = schemathesis.openapi.from_dict(INGEST_DOCUMENT)


def test_both_documents_are_valid_openapi() -> None:
    for document in (API_DOCUMENT, INGEST_DOCUMENT):
        validate_v3(document)  # against the OpenAPI 3.1 meta-schema


def test_the_documents_fuzzed_are_the_ones_served(stack: Stack) -> None:
    assert httpx.get(f"{stack.api_url}/openapi.json").json() == API_DOCUMENT
    assert httpx.get(f"{stack.ingest_url}/openapi.json").json() == INGEST_DOCUMENT


@api_schema.parametrize()
@BOUNDED
def test_the_api_answers_any_input_without_a_server_error(case: schemathesis.Case,
                                                          stack: Stack) -> None:
    case.call_and_validate(base_url=stack.api_url, checks=CHECKS,
                           headers={"Authorization": f"Bearer {stack.token}"})


@ingest_schema.parametrize()
@ingest_schema.given(own_endpoint=st.booleans(), credential=st.sampled_from(
    ["x-vapi-secret", "authorization", "wrong", "none"]))
@BOUNDED
def test_ingest_answers_any_input_without_a_server_error(
        case: schemathesis.Case, stack: Stack, own_endpoint: bool, credential: str) -> None:
    secret = WEBHOOK_SECRET
    if case.path_parameters and "endpoint_id" in case.path_parameters:
        if own_endpoint:
            case.path_parameters["endpoint_id"] = stack.endpoint_id
        secret = stack.org_secret
    headers = {"x-vapi-secret": {"x-vapi-secret": secret},
               "authorization": {"authorization": f"Bearer {secret}"},
               "wrong": {"x-vapi-secret": "not-the-secret"},
               "none": {}}[credential]
    if case.operation.method.lower() != "post":
        headers = {}
    case.call_and_validate(base_url=stack.ingest_url, checks=CHECKS, headers=headers)
