"""The dashboard in a real browser: sign in and out, the overview's figures against the
API's, calls filtered and one call opened, leads, usage, and the Vapi account connected
against the fake Vapi and synced with "Sync now". Every page is saved as a screenshot
under tests/artifacts/."""

from __future__ import annotations

import re
import uuid

from playwright.async_api import Page, expect

from api.dashboard import formats
from api.dashboard.app import content_security_policy
from calltrail_testkit.fake_vapi import FakeVapi
from tests.dashboard.conftest import PHONE, Dashboard, screenshot, sign_in
from tests.metrics_sync.conftest import running_sync


async def test_sign_in_overview_equals_the_api_and_sign_out(page: Page,
                                                            dashboard: Dashboard) -> None:
    response = await page.goto(f"{dashboard.url}/")
    assert response is not None and page.url == f"{dashboard.url}/login"
    assert response.headers["content-security-policy"] == content_security_policy(
        dashboard.settings.vapi_api_base_url)
    assert response.headers["x-content-type-options"] == "nosniff"
    await screenshot(page, "login")

    await page.fill("#email", dashboard.email)
    await page.fill("#password", "not-the-password")
    await page.click("button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("do not match")
    assert "not-the-password" not in await page.content()

    await sign_in(page, dashboard)
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["calltrail_session"]["httpOnly"]
    assert cookies["calltrail_session"]["sameSite"] == "Lax"
    assert dashboard.org.api_token not in await page.content()

    api = (await dashboard.api.get("/api/stats/overview")).json()
    assert api["calls"] == 30
    expected = {
        "#stat-calls": formats.number(api["calls"]),
        "#stat-new-leads": formats.number(api["newLeads"]),
        "#stat-minutes": formats.number(api["minutes"], 1),
        "#stat-cost": formats.money(api["cost"]),
        "#stat-success": formats.percent(api["successRate"]),
        "#stat-duration": formats.duration(api["averageDurationSeconds"]),
        "#stat-cost-per-call": formats.money(api["costPerCall"]),
    }
    for selector, text in expected.items():
        await expect(page.locator(selector)).to_have_text(text)
    await expect(page.locator(".chart svg.wide rect.barfill")).to_have_count(len(api["daily"]))
    await screenshot(page, "overview")
    await screenshot(page, "overview-phone", viewport=PHONE)

    await page.click("text=Sign out")
    await page.wait_for_url(f"{dashboard.url}/login")
    await page.goto(f"{dashboard.url}/calls")
    assert page.url == f"{dashboard.url}/login"


async def test_calls_filtered_one_call_opened_and_leads(page: Page,
                                                       dashboard: Dashboard) -> None:
    await sign_in(page, dashboard)
    await page.click("nav >> text=Calls")
    await expect(page.locator("table.list tbody tr")).to_have_count(25)
    await expect(page.locator("a[rel=next]")).to_be_visible()
    await screenshot(page, "calls")
    await screenshot(page, "calls-phone", viewport=PHONE)

    await page.select_option("select[name=direction]", "outbound")
    await page.click("button:has-text('Filter')")
    await page.wait_for_url(re.compile(r"direction=outbound"))
    outbound = (await dashboard.api.get("/api/calls", params={"direction": "outbound"})
                ).json()["calls"]
    rows = page.locator("table.list tbody tr")
    await expect(rows).to_have_count(len(outbound))
    await expect(rows.first.locator("td").nth(1)).to_have_text("Outbound")

    await rows.first.locator("a").click()
    await page.wait_for_url(re.compile(r"/calls/call-"))
    await expect(page.locator(".turn.assistant").first).to_contain_text("Acme Roofing")
    await expect(page.locator(".turn.customer").first).to_contain_text("roof repair")
    # The player's source is the dashboard's own route; with no key connected it leads to
    # the stored URL (tests/dashboard/test_recordings.py plays Vapi's fresh one).
    source = await page.locator("audio[controls]").get_attribute("src")
    assert source is not None and source.endswith("/recording?channel=mono")
    played = await page.request.get(f"{dashboard.url}{source}", max_redirects=0)
    assert played.status == 303
    assert played.headers["location"] == "https://storage.vapi.example/recordings/demo.wav"
    await expect(page.locator("pre")).to_contain_text("12 Oak Street")
    await screenshot(page, "call")
    await screenshot(page, "call-phone", viewport=PHONE)

    await page.goto(f"{dashboard.url}/calls/{uuid.uuid4()}")
    await expect(page.locator("h1")).to_have_text("No such call")

    await page.click("nav >> text=Leads")
    await page.fill("input[name=q]", "dana")
    await page.click("button:has-text('Search')")
    await expect(page.locator("table.list tbody tr")).to_have_count(1)
    await screenshot(page, "leads")
    await page.click("text=Dana Whitfield")
    await expect(page.locator("h1")).to_have_text("Dana Whitfield")
    await expect(page.locator("table.list tbody tr")).to_have_count(8)
    await screenshot(page, "lead")
    await page.click("text=Filter the call history by this lead")
    await page.wait_for_url(re.compile(r"/calls\?leadId="))
    await expect(page.locator("table.list tbody tr")).to_have_count(8)


async def test_connect_a_key_and_sync_now(page: Page, dashboard: Dashboard,
                                          fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    api_key = f"key-{uuid.uuid4()}"
    fake.add_account(api_key, calls=60, days=10, phone_numbers=2)
    async with running_sync(dashboard.settings, tick_seconds=0.2):
        await sign_in(page, dashboard)
        await page.click("nav >> text=Usage")
        await expect(page.locator(".alert.notice")).to_contain_text("No Vapi account")
        await page.click("nav >> text=Settings")
        await expect(page.locator("#webhook-url")).to_contain_text("/webhooks/vapi/ep_")
        await page.fill("#apiKey", "not a key")
        await page.click("button:has-text('Connect')")
        await expect(page.get_by_role("alert")).to_contain_text("not a Vapi API key")
        await page.fill("#apiKey", api_key)
        await page.click("button:has-text('Connect')")
        await expect(page.locator("#last-sync")).not_to_have_text("—", timeout=20_000)
        assert api_key not in await page.content()
        first = await page.locator("#last-sync").inner_text()
        await screenshot(page, "settings")
        await screenshot(page, "settings-phone", viewport=PHONE)

        await page.click("#sync-now")
        await expect(page.locator("#sync-status")).to_contain_text(
            re.compile("Queued|Running|Succeeded"))
        await expect(page.locator("#last-sync")).not_to_have_text(first, timeout=20_000)
        await expect(page.locator("#sync-status")).to_contain_text("Succeeded")

        await page.click("nav >> text=Usage")
        usage = (await dashboard.api.get("/api/vapi/metrics")).json()
        assert usage["calls"] == 60
        await expect(page.locator("#usage-calls")).to_have_text(formats.number(usage["calls"]))
        await expect(page.locator("#usage-cost")).to_have_text(formats.money(usage["cost"]))
        await screenshot(page, "usage")
        await screenshot(page, "usage-phone", viewport=PHONE)

        await page.click("nav >> text=Settings")
        await page.click("button:has-text('Disconnect')")
        await expect(page.get_by_role("status")).to_contain_text("disconnected")
