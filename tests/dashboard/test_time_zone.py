"""The organization's time zone on the dashboard (decision 45), server-rendered: Settings
shows it and lets admins change it (a viewer reads only), the overview says its figures are
being rebuilt until the processors' rebuild is done, then counts the new zone's days."""

from __future__ import annotations

import contextlib
import datetime as dt
import re

import httpx
from playwright.async_api import Page, expect

from call_processor.rebuild import rebuild_waiting_figures
from calltrail_common import time_zones
from tests.call_processor.test_figures_rebuild import apply, report
from tests.dashboard.conftest import (
    Dashboard,
    add_person,
    screenshot,
    sign_in,
    signed_in_client,
)

KOLKATA = time_zones.zone("Asia/Kolkata")
DAY = {"startDate": "2026-11-22", "endDate": "2026-11-22"}


def _calls(page: httpx.Response) -> str:
    found = re.search(r'id="stat-calls">([^<]*)<', page.text)
    assert found is not None, page.text
    return found.group(1)


async def test_admins_set_the_zone_and_the_overview_follows_after_the_rebuild(
        dashboard: Dashboard) -> None:
    org_id = dashboard.org.org_id
    # 19:00 UTC on the 21st: the 22nd at 00:30 in Kolkata.
    await apply(dashboard.connection, org_id,
                report("early", dt.datetime(2026, 11, 22, 0, 30, tzinfo=KOLKATA),
                       "+14155550102"))
    await add_person(dashboard.connection, org_id, "viewer@acme.example", "viewer")
    await add_person(dashboard.connection, org_id, "admin@acme.example", "admin")
    viewer, viewer_csrf = await signed_in_client(dashboard, "viewer@acme.example")
    admin, csrf = await signed_in_client(dashboard, "admin@acme.example")
    async with contextlib.aclosing(viewer), contextlib.aclosing(admin):
        seen = await viewer.get("/settings")
        assert 'id="time-zone-name">UTC<' in seen.text
        assert 'id="save-time-zone"' not in seen.text  # a viewer reads only
        refused = await viewer.post("/settings/time-zone", data={
            "csrf": viewer_csrf, "timeZone": "Asia/Kolkata"})
        assert refused.status_code == 403
        assert _calls(await admin.get("/", params=DAY)) == "0"

        bad = await admin.post("/settings/time-zone", data={"csrf": csrf,
                                                            "timeZone": "Mars/Olympus"})
        assert bad.status_code == 400 and "IANA time zone" in bad.text
        chosen = await admin.post("/settings/time-zone", data={"csrf": csrf,
                                                               "timeZone": "Asia/Kolkata"})
        assert chosen.status_code == 303
        page = await admin.get(chosen.headers["location"])
        assert 'id="time-zone-name">Asia/Kolkata<' in page.text
        assert 'id="figures-rebuilding"' in page.text
        overview = await admin.get("/", params=DAY)
        assert 'id="figures-rebuilding"' in overview.text and _calls(overview) == "0"

        assert await rebuild_waiting_figures(dashboard.connection) == 1
        overview = await admin.get("/", params=DAY)
        assert 'id="figures-rebuilding"' not in overview.text
        assert _calls(overview) == "1"
    assert await dashboard.connection.fetchval(
        "SELECT target FROM audit_log WHERE action = 'time_zone.set'"
        " AND actor = 'user:admin@acme.example'") == "Asia/Kolkata"


async def test_the_owner_sets_the_zone_in_a_browser(page: Page, dashboard: Dashboard) -> None:
    await sign_in(page, dashboard)
    await page.click("nav >> text=Settings")
    await expect(page.locator("#time-zone-name")).to_have_text("UTC")
    await page.fill("#timeZone", "America/Los_Angeles")
    await page.click("#save-time-zone")
    await expect(page.get_by_role("status")).to_contain_text("Time zone saved")
    await expect(page.locator("#time-zone-name")).to_have_text("America/Los_Angeles")
    await expect(page.locator("#figures-rebuilding")).to_be_visible()
    await page.locator("#time-zone").scroll_into_view_if_needed()
    await screenshot(page, "settings-time-zone")
    await page.click("nav >> text=Overview")
    await expect(page.locator("#figures-rebuilding")).to_contain_text("being rebuilt")
    await screenshot(page, "overview-rebuilding")
