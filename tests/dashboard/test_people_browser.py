"""People in a real browser: the owner invites a viewer from the People page, the viewer
follows the link in a browser of their own, chooses a password and lands on the overview,
sees no secret and no action; signing out ends the session server-side, so a copy of the
old cookie opens nothing. Every page is saved under tests/artifacts/."""

from __future__ import annotations

from playwright.async_api import Browser, Page, expect

from tests.dashboard.conftest import DESKTOP, PASSWORD, PHONE, Dashboard, screenshot, sign_in

VIEWER = "viewer@acme-roofing.example"


async def test_an_owner_invites_a_viewer_who_joins_reads_and_signs_out(
        page: Page, browser: Browser, dashboard: Dashboard) -> None:
    await sign_in(page, dashboard)
    await page.click("nav >> text=Settings")
    await page.click("a:has-text('People')")
    await page.wait_for_url(f"{dashboard.url}/settings/people")
    await page.fill("#invite-email", VIEWER)
    await page.select_option("#invite-role", "viewer")
    await page.click("button:has-text('Invite')")
    await expect(page.get_by_role("status")).to_contain_text("No mail is set up here")
    link = await page.locator("#invite-link").inner_text()
    await expect(page.locator("#pending")).to_contain_text(VIEWER)
    await screenshot(page, "people")
    await screenshot(page, "people-phone", viewport=PHONE)
    # The link names DASHBOARD_BASE_URL; this test's api listens on a port of its own.
    path = link.removeprefix(dashboard.settings.dashboard_base_url)
    assert path.startswith("/invite/")

    context = await browser.new_context(viewport=DESKTOP)
    try:
        viewer = await context.new_page()
        viewer.set_default_timeout(10_000)
        await viewer.goto(f"{dashboard.url}{path}")
        await expect(viewer.locator("h1")).to_have_text("Join Calltrail")
        await expect(viewer.locator(".signin")).to_contain_text("invited as viewer")
        await screenshot(viewer, "invite")
        await viewer.fill("#password", PASSWORD)
        await viewer.fill("#confirm", PASSWORD)
        await viewer.click("button[type=submit]")
        await viewer.wait_for_url(f"{dashboard.url}/")
        await expect(viewer.locator("#stat-calls")).to_be_visible()

        await viewer.goto(f"{dashboard.url}/settings/people")
        await expect(viewer.locator("#me")).to_contain_text(f"Signed in as {VIEWER}, viewer")
        await expect(viewer.locator("#invite")).to_have_count(0)
        await screenshot(viewer, "people-viewer")
        await viewer.click("text=Settings")
        await expect(viewer.locator("#webhook-url")).to_contain_text("/webhooks/vapi/ep_")
        await expect(viewer.locator("#webhook-secret")).to_have_count(0)
        await expect(viewer.locator("#apiKey")).to_have_count(0)
        assert dashboard.org.webhook_secret not in await viewer.content()
        await screenshot(viewer, "settings-viewer")

        copied = await context.cookies()
        await viewer.click("text=Sign out")
        await viewer.wait_for_url(f"{dashboard.url}/login")
    finally:
        await context.close()

    replay = await browser.new_context(viewport=DESKTOP)
    try:
        await replay.add_cookies(copied)  # type: ignore[arg-type]
        stale = await replay.new_page()
        await stale.goto(f"{dashboard.url}/")
        assert stale.url == f"{dashboard.url}/login"
    finally:
        await replay.close()

    # The owner sees the viewer joined, and the way to a forgotten password.
    await page.goto(f"{dashboard.url}/settings/people")
    await expect(page.locator("#members")).to_contain_text(VIEWER)
    await expect(page.locator("#pending")).to_contain_text("None.")
    await page.context.clear_cookies()
    await page.goto(f"{dashboard.url}/login")
    await page.click("#forgot")
    await page.wait_for_url(f"{dashboard.url}/reset")
    await screenshot(page, "reset")
