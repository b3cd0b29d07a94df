"""The dashboard under test: the real api app on a real socket, a seeded organization, the
fake Vapi and metrics-sync in this event loop (so "Sync now" finishes), and Debian's
Chromium driven by Playwright.

Chromium comes from Debian (`deploy/ensure-packages.sh`, run by `make test`): Playwright's
own browser download cannot reach its host from these machines. Without it the tests fail,
saying so; they are never skipped.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from calltrail_common import db, people
from calltrail_common.access import Role
from calltrail_common.organizations import NewOrganization, create_organization
from calltrail_common.settings import Settings
from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi, serve
from tests.api.conftest import ENCRYPTION_KEY, insert_call, insert_lead, serve_api
from tests.conftest import REPO, make_settings

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "tests" / "artifacts"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

TRANSCRIPT = ("AI: Hello, this is Riley from Acme Roofing. How can I help you today?\n"
              "User: Hi, I'd like a quote for a roof repair after last week's storm.\n"
              "AI: Of course. Could I have the address of the property?\n"
              "User: It's 12 Oak Street.\n"
              "AI: Thank you. An estimator can come on Tuesday morning. Does that work?\n"
              "User: Tuesday morning is perfect, thanks.")


@pytest.fixture(scope="session")
def fake_vapi() -> Iterator[tuple[FakeVapi, str]]:
    fake = FakeVapi(seed=23)
    with serve(fake) as url:
        yield fake, url


PASSWORD = "correct horse battery staple"


@dataclass
class Dashboard:
    url: str
    settings: Settings
    connection: asyncpg.Connection
    org: NewOrganization
    api: httpx.AsyncClient  # the JSON API with the organization's token
    call_ids: list[str]
    lead_id: uuid.UUID
    email: str = "owner@acme-roofing.example"  # the organization's owner
    password: str = PASSWORD


async def add_person(connection: asyncpg.Connection, org_id: uuid.UUID, email: str,
                     role: Role, password: str = PASSWORD) -> uuid.UUID:
    """A person who has joined `org_id` with `role` and this password."""
    user_id = await people.ensure_user(connection, email)
    await people.set_password(connection, user_id, password)
    await people.add_member(connection, org_id, user_id, role)
    return user_id


async def _seed(connection: asyncpg.Connection, org: NewOrganization
                ) -> tuple[list[str], uuid.UUID]:
    """A fortnight of calls, leads and daily totals, as the processor would leave them."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    lead_id = await insert_lead(connection, org.org_id, "+14155550142", name="Dana Whitfield",
                                email="dana@example.com", created_at=now - timedelta(days=3))
    await insert_lead(connection, org.org_id, "+14155550177", name="Sam Ortiz",
                      created_at=now - timedelta(days=6))
    reasons = ["customer-ended-call", "assistant-ended-call", "voicemail",
               "customer-did-not-answer", "customer-busy", "pipeline-error-openai-llm-failed"]
    call_ids = []
    for i in range(30):
        created = now - timedelta(hours=9 * i + 1)
        outbound = i % 3 == 0
        call_ids.append(await insert_call(
            connection, org.org_id, created_at=created, started_at=created,
            ended_at=created + timedelta(seconds=40 + 11 * i),
            direction="outboundPhoneCall" if outbound else "inboundPhoneCall",
            ended_reason=reasons[i % len(reasons)], duration_seconds=Decimal(40 + 11 * i),
            cost=Decimal("0.05") + Decimal(i) / 100,
            customer_number="+14155550142" if i % 4 == 0 else f"+1415555{1000 + i}",
            customer_name="Dana Whitfield" if i % 4 == 0 else None,
            lead_id=lead_id if i % 4 == 0 else None,
            assistant_id="asst-riley" if i % 2 == 0 else "asst-morgan",
            success_evaluation="true" if i % 3 else "false",
            transcript=TRANSCRIPT, summary="The caller asked for a roof repair quote; an "
            "estimator visits on Tuesday morning.",
            structured_data={"intent": "quote", "address": "12 Oak Street"},
            recording_url="https://storage.vapi.example/recordings/demo.wav"))
    await connection.execute(
        """UPDATE calls SET stats_day = (created_at AT TIME ZONE 'UTC')::date,
                            cost_breakdown = '{"transport": 0.01, "stt": 0.01, "llm": 0.02,
                                               "tts": 0.01, "vapi": 0.01}'::jsonb
           WHERE org_id = $1""", org.org_id)
    await connection.execute(
        """UPDATE leads l SET call_count = c.n, first_call_at = c.first, last_call_at = c.last
           FROM (SELECT lead_id, count(*) AS n, min(created_at) AS first,
                        max(created_at) AS last FROM calls GROUP BY lead_id) c
           WHERE l.id = c.lead_id""")
    await connection.execute(
        """INSERT INTO daily_stats_shards (org_id, day, calls, inbound, outbound, web,
                                           new_leads, duration_seconds, cost)
           SELECT org_id, stats_day, count(*),
                  count(*) FILTER (WHERE direction = 'inboundPhoneCall'),
                  count(*) FILTER (WHERE direction = 'outboundPhoneCall'), 0,
                  0, sum(duration_seconds), sum(cost)
           FROM calls WHERE org_id = $1 GROUP BY org_id, stats_day""", org.org_id)
    # How calls ended and per assistant, as migration 0008 derives them from the calls.
    await connection.execute(
        """INSERT INTO daily_call_outcome_shards (org_id, day, outcome_key, ended_reason,
                                                  success_evaluation, calls)
           SELECT org_id, stats_day, md5(ROW(ended_reason, success_evaluation)::text)::uuid,
                  ended_reason, success_evaluation, count(*)
           FROM calls WHERE org_id = $1
           GROUP BY org_id, stats_day, ended_reason, success_evaluation""", org.org_id)
    await connection.execute(
        """INSERT INTO daily_assistant_shards (org_id, day, assistant_key, assistant_id, calls,
                                               duration_seconds, cost)
           SELECT org_id, stats_day, md5(ROW(assistant_id)::text)::uuid, assistant_id,
                  count(*), sum(duration_seconds), sum(cost)
           FROM calls WHERE org_id = $1 GROUP BY org_id, stats_day, assistant_id""",
        org.org_id)
    for created in (now - timedelta(days=3), now - timedelta(days=6)):  # the two leads
        await connection.execute(
            """INSERT INTO daily_stats_shards (org_id, day, new_leads) VALUES ($1, $2, 1)
               ON CONFLICT (org_id, day, shard)
               DO UPDATE SET new_leads = daily_stats_shards.new_leads + 1""",
            org.org_id, created.date())
    return call_ids, lead_id


@pytest.fixture
async def dashboard(database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]
                    ) -> AsyncIterator[Dashboard]:
    settings = make_settings(database_url=database_url, amqp_prefix=topology.prefix,
                             encryption_key=ENCRYPTION_KEY, vapi_api_base_url=fake_vapi[1],
                             vapi_request_timeout_seconds=3, sync_interval_seconds=300,
                             sync_lease_seconds=6, metrics_sync_metrics_port=0)
    connection = await db.connect(database_url)
    try:
        org = await create_organization(connection, "Acme Roofing")
        call_ids, lead_id = await _seed(connection, org)
        await add_person(connection, org.org_id, Dashboard.email, "owner")
        async with serve_api(settings) as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {org.api_token}"},
                timeout=10) as api:
            yield Dashboard(url, settings, connection, org, api, call_ids, lead_id)
    finally:
        await connection.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM}: run deploy/ensure-packages.sh (make test "
                    "does) or set CHROMIUM_PATH", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    try:
        yield page
    finally:
        await context.close()


async def sign_in(page: Page, dashboard: Dashboard, email: str | None = None,
                  password: str = PASSWORD) -> None:
    await page.goto(f"{dashboard.url}/login")
    await page.fill("#email", email or dashboard.email)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{dashboard.url}/")


async def signed_in_client(dashboard: Dashboard, email: str | None = None,
                           password: str = PASSWORD) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client signed in through the form, and the CSRF token of its pages."""
    client = httpx.AsyncClient(base_url=dashboard.url, timeout=10)
    login = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf is not None
    response = await client.post("/login", data={
        "csrf": csrf.group(1), "email": email or dashboard.email, "password": password})
    assert response.status_code == 303, response.text
    page = await client.get("/settings")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return client, csrf.group(1)


async def screenshot(page: Page, name: str, *, viewport: dict[str, int] | None = None) -> None:
    """Save the whole page under tests/artifacts/ (ignored by git) for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    if viewport is not None:
        await page.set_viewport_size(viewport)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if viewport is not None:
        await page.set_viewport_size(DESKTOP)
