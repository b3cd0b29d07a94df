"""Opening the dashboard asks for a sync when the last one is older than the interval, and
only once while it waits."""

from __future__ import annotations

import contextlib
import uuid

from calltrail_testkit.fake_vapi import FakeVapi
from tests.dashboard.conftest import Dashboard, signed_in_client


async def _dashboard_runs(dashboard: Dashboard) -> int:
    return await dashboard.connection.fetchval(
        "SELECT count(*) FROM sync_runs WHERE org_id = $1 AND trigger = 'dashboard'",
        dashboard.org.org_id)


async def test_opening_a_page_requests_a_sync_when_stale(
        dashboard: Dashboard, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    api_key = f"key-{uuid.uuid4()}"
    fake.add_account(api_key, phone_numbers=1)
    assert (await dashboard.api.post("/api/vapi/connect", json={"apiKey": api_key})
            ).status_code == 200
    browser, _ = await signed_in_client(dashboard)
    async with contextlib.aclosing(browser):
        # The first sync (trigger connect) is queued: nothing more is asked for.
        assert (await browser.get("/")).status_code == 200
        assert await _dashboard_runs(dashboard) == 0
        # Synced recently, nothing waiting: still nothing.
        await dashboard.connection.execute(
            "UPDATE sync_runs SET status = 'succeeded', finished_at = now() WHERE org_id = $1",
            dashboard.org.org_id)
        await dashboard.connection.execute(
            "UPDATE vapi_accounts SET last_synced_at = now() WHERE org_id = $1",
            dashboard.org.org_id)
        assert (await browser.get("/calls")).status_code == 200
        assert await _dashboard_runs(dashboard) == 0
        # Older than the interval: one run, however many pages are opened while it waits.
        await dashboard.connection.execute(
            "UPDATE vapi_accounts SET last_synced_at = now() - interval '1 hour' "
            "WHERE org_id = $1", dashboard.org.org_id)
        for path in ("/", "/usage", "/settings"):
            assert (await browser.get(path)).status_code == 200
        assert await _dashboard_runs(dashboard) == 1
