"""Every dashboard page fits a 390x844 phone: nothing makes the page scroll sideways, and
no page link hides past the edge (the navigation wraps; wide tables scroll inside their own
card or become cards). Each page is saved as tests/artifacts/phone-<page>.png for a person
to look at."""

from __future__ import annotations

import re
import uuid

from playwright.async_api import Browser, Page

from calltrail_common import outbound_endpoints, people
from tests.api.conftest import insert_vapi_name
from tests.dashboard.conftest import ARTIFACTS, PHONE, Dashboard, sign_in
from tests.dashboard.test_agencies import AGENCY_OWNER, _agency
from tests.support.delivery_log import insert_delivery

# Elements whose right edge passes the viewport: named in the failure, so the rule to fix
# is plain.
_OVERFLOW = """() => {
  const doc = document.documentElement;
  const past = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width > 0 && box.right > doc.clientWidth + 0.5) {
      past.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                (el.className && typeof el.className === 'string'
                 ? '.' + el.className.trim().split(/\\s+/).join('.') : '') +
                ' right=' + Math.round(box.right));
    }
  }
  // The pages' links wrap: none hides past the edge of a navigation that scrolls itself.
  const nav = document.querySelector('header nav');
  const navHides = nav !== null && nav.scrollWidth > nav.clientWidth;
  return {scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth, navHides,
          past: past.slice(0, 8)};
}"""


async def _fits(page: Page, url: str, name: str, too_wide: dict[str, object]) -> None:
    """Visit `url` on the phone; note it in `too_wide` when it scrolls sideways (every page
    is visited, so one run names every page to fix)."""
    response = await page.goto(url)
    assert response is not None and response.status < 500, (url, response and response.status)
    await page.screenshot(path=str(ARTIFACTS / f"phone-{name}.png"), full_page=True)
    found = await page.evaluate(_OVERFLOW)
    if found["scrollWidth"] > found["clientWidth"] or found["navHides"]:
        too_wide[name] = found


async def test_every_page_fits_a_phone_without_sideways_scrolling(
        browser: Browser, dashboard: Dashboard) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    connection = dashboard.connection
    org_id = dashboard.org.org_id
    # A long name (as accounts have them) and an unknown id, in every table they reach.
    await insert_vapi_name(connection, org_id, "assistant", "asst-riley",
                           "Riley, front desk and after-hours bookings")
    made = await outbound_endpoints.create(
        connection, org_id, url="https://crm.acme-roofing.example.com/hooks/calltrail/calls",
        event_types=["call.ended", "lead.created"], description="The CRM's intake")
    await insert_delivery(connection, org_id, made.endpoint.id)
    invitation = await people.invite(connection, org_id, "new.person@acme-roofing.example",
                                     "viewer", None)
    await _agency(dashboard)

    too_wide: dict[str, object] = {}
    context = await browser.new_context(viewport=PHONE)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    try:
        base = dashboard.url
        await _fits(page, f"{base}/login", "login", too_wide)
        await _fits(page, f"{base}/reset", "reset", too_wide)
        await _fits(page, f"{base}/invite/{invitation.token}", "invite", too_wide)

        await sign_in(page, dashboard)
        lead_page = f"{base}/leads/{dashboard.lead_id}"
        for name, path in [
                ("overview", "/"), ("calls", "/calls"),
                ("call", f"/calls/{dashboard.call_ids[0]}"),
                ("call-missing", f"/calls/{uuid.uuid4()}"),
                ("leads", "/leads"), ("lead", lead_page.removeprefix(base)),
                ("usage", "/usage"), ("settings", "/settings"),
                ("settings-webhook", "/settings/webhook"),
                ("settings-people", "/settings/people"),
                ("settings-tokens", "/settings/tokens"),
                ("settings-audit", "/settings/audit"),
                ("settings-outbound", "/settings/outbound-webhooks"),
                ("settings-outbound-endpoint",
                 f"/settings/outbound-webhooks/{made.endpoint.id}"),
                ("settings-success", "/settings/success")]:
            await _fits(page, f"{base}{path}", name, too_wide)

        # An agency's people: the longest navigation, the organization switcher, clients.
        await page.context.clear_cookies()
        await sign_in(page, dashboard, AGENCY_OWNER)
        await _fits(page, f"{base}/", "agency-overview", too_wide)
        await _fits(page, f"{base}/clients", "agency-clients", too_wide)
        await page.click("button.client-name >> text=Bright Dental")
        await page.wait_for_url(f"{base}/")
        await _fits(page, f"{base}/", "agency-client-overview", too_wide)
        await _fits(page, f"{base}/calls", "agency-client-calls", too_wide)
        assert re.search("Bright Dental", await page.content())
    finally:
        await context.close()
    assert not too_wide, too_wide
