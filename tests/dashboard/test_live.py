"""The live board in Chromium (decision 46): a call appears when it starts ringing, its
duration ticks, it shows how it ended, and it leaves after the linger (3 s here); its
stream takes the dashboard session, and another organization's session sees none of it."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, expect

from api.dashboard.app import content_security_policy
from calltrail_common import db
from calltrail_common.organizations import create_organization
from calltrail_common.topology import Topology
from tests.api.conftest import ENCRYPTION_KEY, serve_api
from tests.conftest import AMQP_URL, make_settings
from tests.dashboard.conftest import (
    PHONE,
    Dashboard,
    add_person,
    screenshot,
    sign_in,
    signed_in_client,
)
from tests.support.live import end_of_call_report, now_ms, sse_events, status_update
from tests.support.processor import publish, running_processor

LINGER_SECONDS = 3.0


@pytest.fixture
async def live_dashboard(database_url: str, topology: Topology) -> AsyncIterator[Dashboard]:
    settings = make_settings(database_url=database_url, amqp_prefix=topology.prefix,
                             encryption_key=ENCRYPTION_KEY, live_linger_seconds=LINGER_SECONDS,
                             sync_interval_seconds=86_400)
    connection = await db.connect(database_url)
    try:
        org = await create_organization(connection, "Acme Roofing")
        await add_person(connection, org.org_id, Dashboard.email, "owner")
        async with serve_api(settings) as url, \
                running_processor(database_url, AMQP_URL, topology, batch_size=20):
            yield Dashboard(url, settings, connection, org, None, [], uuid.uuid4())  # type: ignore[arg-type]
    finally:
        await connection.close()


async def test_a_call_rings_ticks_ends_and_leaves(live_dashboard: Dashboard, page: Page
                                                  ) -> None:
    dashboard = live_dashboard
    send = lambda *bodies: publish(AMQP_URL, Topology(dashboard.settings.amqp_prefix),  # noqa: E731
                                   list(bodies), dashboard.org.org_id)
    await sign_in(page, dashboard)
    await page.click("nav >> text=Live")
    await page.wait_for_url(f"{dashboard.url}/live")
    await expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    await expect(page.locator("#live-empty")).to_be_visible()

    call_id = f"live-{uuid.uuid4().hex[:8]}"
    created = now_ms()
    sent = time.monotonic()
    await send(status_update(call_id, "ringing", created_ms=created, name="Ana Ruiz"))
    row = page.locator(f'tr[data-call-id="{call_id}"]')
    await expect(row).to_have_attribute("data-status", "ringing")
    print(f"ringing shown {time.monotonic() - sent:.3f} s after it was published")
    await expect(row).to_contain_text("Ana Ruiz")
    await expect(row).to_contain_text("Inbound")
    await expect(row).to_contain_text("asst-live-1")
    await expect(page.locator("#live-empty")).to_be_hidden()

    started = now_ms() - 65_000  # a minute in: the duration reads 1:05, then ticks
    await send(status_update(call_id, "in-progress", created_ms=created, started_ms=started))
    await expect(row).to_have_attribute("data-status", "in-progress")
    duration = row.locator("td.duration")
    await expect(duration).to_have_text("1:05", timeout=3000)
    first = await duration.text_content()
    await page.wait_for_timeout(2100)
    assert await duration.text_content() != first
    await screenshot(page, "live")

    ended = now_ms()
    await send(end_of_call_report(call_id, created_ms=created, started_ms=started,
                                  ended_ms=ended, success="true"))
    await expect(row).to_have_attribute("data-status", "ended")
    await expect(row).to_contain_text("Completed · success")
    await expect(duration).to_have_text("1:0" + str((ended - started) // 1000 - 60))
    await screenshot(page, "live-ended")
    await screenshot(page, "live-phone", viewport=PHONE)
    # It leaves after the linger, and the board says nothing is in progress.
    await expect(row).to_have_count(0, timeout=int(LINGER_SECONDS * 1000) + 3000)
    await expect(page.locator("#live-empty")).to_be_visible()


async def test_the_stream_takes_the_session_and_shows_only_its_organization(
        live_dashboard: Dashboard) -> None:
    dashboard = live_dashboard
    call_id = f"live-{uuid.uuid4().hex[:8]}"
    await publish(AMQP_URL, Topology(dashboard.settings.amqp_prefix),
                  [status_update(call_id, "ringing", created_ms=now_ms(), name="Ana Ruiz")],
                  dashboard.org.org_id)
    await _eventually_on_board(dashboard, Dashboard.email, call_id)

    # The page runs our own script only, under the dashboard's policy.
    owner, _ = await signed_in_client(dashboard)
    async with contextlib.aclosing(owner):
        page = await owner.get("/live")
        assert page.headers["content-security-policy"] == content_security_policy(
            dashboard.settings.vapi_api_base_url)
        assert re.findall(r"<script[^>]*>(.*?)</script>", page.text, re.S) == [""]
        assert '<script src="/static/live.js" defer>' in page.text
        script = await owner.get("/static/live.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert "http" not in script.text.replace("/api/live", "")  # no CDN, no other origin

    other = await create_organization(dashboard.connection, "Bravo Plumbing")
    await add_person(dashboard.connection, other.org_id, "owner@bravo.example", "owner")
    stranger, _ = await signed_in_client(dashboard, "owner@bravo.example")
    async with contextlib.aclosing(stranger), stranger.stream("GET", "/api/live") as response:
        assert response.status_code == 200
        events = sse_events(response)
        async for event in events:
            if event.event == "snapshot":
                assert event.data == {"calls": []}
                break


async def _eventually_on_board(dashboard: Dashboard, email: str, call_id: str) -> None:
    client, _ = await signed_in_client(dashboard, email)
    async with contextlib.aclosing(client):
        deadline = time.monotonic() + 15
        while True:
            async with client.stream("GET", "/api/live") as response:
                assert response.status_code == 200, await response.aread()
                async for event in sse_events(response):
                    if event.event == "snapshot":
                        if any(c["id"] == call_id for c in event.data["calls"]):
                            return
                        break
            assert time.monotonic() < deadline, "the call never showed"
