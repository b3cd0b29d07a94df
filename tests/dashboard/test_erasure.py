"""The dashboard's side of decision 44: "Erase this caller" on a lead's page (owners and
admins, confirmed with a tick), and the organization's retention on the settings page."""

from __future__ import annotations

import contextlib

from playwright.async_api import Page

from tests.dashboard.conftest import (
    Dashboard,
    add_person,
    screenshot,
    sign_in,
    signed_in_client,
)

NUMBER, NAME = "+14155550142", "Dana Whitfield"


async def test_erase_a_caller_from_the_lead_page(dashboard: Dashboard, page: Page) -> None:
    lead = f"/leads/{dashboard.lead_id}"
    overview = (await dashboard.api.get("/api/stats/overview")).json()
    await sign_in(page, dashboard)
    await page.goto(f"{dashboard.url}{lead}")
    await screenshot(page, "lead-erase")
    # The browser refuses the form until the box is ticked.
    await page.click("#erase-caller")
    assert page.url.endswith(lead)
    assert await page.locator("#erase-caller").count() == 1
    await page.check("#erase-confirm")
    await page.click("#erase-caller")
    await page.wait_for_selector("text=This caller was erased")
    await screenshot(page, "lead-erased")
    text = await page.inner_text("main")
    assert NUMBER not in text and NAME not in text
    assert await page.locator("#erase-caller").count() == 0
    assert (await dashboard.api.get("/api/stats/overview")).json() == overview
    await page.goto(f"{dashboard.url}/settings/audit")
    assert "lead.erase" in await page.inner_text("main")


async def test_the_server_wants_the_tick_and_a_viewer_sees_no_button(dashboard: Dashboard
                                                                      ) -> None:
    lead = f"/leads/{dashboard.lead_id}"
    client, csrf = await signed_in_client(dashboard)
    async with contextlib.aclosing(client):
        refused = await client.post(f"{lead}/erase", data={"csrf": csrf})
        assert refused.status_code == 400 and "Tick the box" in refused.text
        assert NUMBER in (await client.get(lead)).text  # nothing was erased
    await add_person(dashboard.connection, dashboard.org.org_id, "viewer@acme-roofing.example",
                     "viewer")
    viewer, csrf = await signed_in_client(dashboard, "viewer@acme-roofing.example")
    async with contextlib.aclosing(viewer):
        shown = await viewer.get(lead)
        assert 'id="erase-caller"' not in shown.text
        denied = await viewer.post(f"{lead}/erase", data={"csrf": csrf, "confirm": "erase"})
        assert denied.status_code == 403
        assert NUMBER in (await viewer.get(lead)).text


async def test_set_the_retention_on_the_settings_page(dashboard: Dashboard, page: Page
                                                      ) -> None:
    await sign_in(page, dashboard)
    await page.goto(f"{dashboard.url}/settings")
    assert "forever" in await page.inner_text("#retention")
    await page.fill("#retention-days", "30")
    await page.click("#retention button[type=submit]")
    await page.wait_for_selector("text=older content is purged within a day")
    assert "30 days" in await page.inner_text("#retention")
    await screenshot(page, "settings-retention")
    assert (await dashboard.api.get("/api/retention")).json() == {"contentRetentionDays": 30}
