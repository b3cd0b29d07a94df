"""Agencies on the dashboard and the API, tested as an attacker would: a client's people
never reach the agency's other client, a stranger never switches into a client, the
agency's people see every client and a roll-up that equals each client's own overview,
costs carry the markup for the client's people and both figures for the agency's, and the
agency's branding shows on its clients' pages and on the sign-in page of its host name only.
"""

from __future__ import annotations

import re
import uuid
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from playwright.async_api import Page, async_playwright, expect

from api.dashboard import formats
from calltrail_common import agencies
from calltrail_common.organizations import NewOrganization
from tests.api.conftest import insert_call, insert_lead
from tests.dashboard.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    Dashboard,
    _seed,
    add_person,
    screenshot,
    sign_in,
    signed_in_client,
)

AGENCY_OWNER = "owner@acme-agency.example"
CLIENT_USER = "office@bright-dental.example"
HOST = "calls.acme-agency.example"
LOGO = "https://cdn.acme-agency.example/logo.svg"
ACCENT = "#aa3366"
MARKUP = Decimal(25)
PAGES = ["/", "/calls", "/leads", "/usage", "/settings"]


@dataclass
class Agency:
    agency: NewOrganization
    dental: NewOrganization    # client 1, marked up 25%, the fortnight of calls
    plumbing: NewOrganization  # client 2, no markup, three calls of its own
    plumbing_calls: list[str]
    plumbing_lead: uuid.UUID


async def _agency(dashboard: Dashboard) -> Agency:
    connection = dashboard.connection
    agency = await agencies.create_agency(connection, "Acme Agency")
    await agencies.set_brand(connection, agency.org_id, logo_url=LOGO, accent=ACCENT,
                             host_name=HOST)
    dental = await agencies.create_client(connection, agency.org_id, "Bright Dental", MARKUP)
    plumbing = await agencies.create_client(connection, agency.org_id, "Harbor Plumbing")
    await _seed(connection, dental)
    now = datetime.now(UTC).replace(microsecond=0)
    lead = await insert_lead(connection, plumbing.org_id, "+14155550199",
                             name="Plumbing lead")
    calls = []
    for i in range(3):
        calls.append(await insert_call(
            connection, plumbing.org_id, created_at=now - timedelta(hours=i + 1),
            cost=Decimal("0.40") + Decimal(i) / 10, duration_seconds=Decimal(90 + i),
            customer_name=f"Plumbing customer {i}", success_evaluation="true"))
    await connection.execute(
        """UPDATE calls SET stats_day = (created_at AT TIME ZONE 'UTC')::date
           WHERE org_id = $1""", plumbing.org_id)
    await connection.execute(
        """INSERT INTO daily_stats_shards (org_id, day, calls, inbound, outbound, web,
                                           new_leads, duration_seconds, cost)
           SELECT org_id, stats_day, count(*), count(*), 0, 0, 1, sum(duration_seconds),
                  sum(cost)
           FROM calls WHERE org_id = $1 GROUP BY org_id, stats_day""", plumbing.org_id)
    await connection.execute(
        """INSERT INTO daily_call_outcome_shards (org_id, day, outcome_key, ended_reason,
                                                  success_evaluation, calls)
           SELECT org_id, stats_day, md5(ROW(ended_reason, success_evaluation)::text)::uuid,
                  ended_reason, success_evaluation, count(*)
           FROM calls WHERE org_id = $1
           GROUP BY org_id, stats_day, ended_reason, success_evaluation""", plumbing.org_id)
    await add_person(connection, agency.org_id, AGENCY_OWNER, "owner")
    await add_person(connection, dental.org_id, CLIENT_USER, "admin")
    return Agency(agency, dental, plumbing, calls, lead)


def _token_client(dashboard: Dashboard, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=dashboard.url, timeout=10,
                             headers={"Authorization": f"Bearer {token}"})


async def _switch(client: httpx.AsyncClient, csrf: str, org_id: uuid.UUID | str
                  ) -> httpx.Response:
    return await client.post("/switch", data={"csrf": csrf, "org": str(org_id)})


async def test_a_client_user_never_reaches_the_other_client(dashboard: Dashboard) -> None:
    world = await _agency(dashboard)
    client, csrf = await signed_in_client(dashboard, CLIENT_USER)
    async with aclosing(client):
        for page in PAGES:
            answer = await client.get(page)
            assert answer.status_code == 200, page
            assert "Harbor Plumbing" not in answer.text and "Plumbing customer" not in \
                answer.text, page
            assert 'action="/switch"' not in answer.text  # one organization: no switcher
        for call_id in world.plumbing_calls:
            answer = await client.get(f"/calls/{call_id}")
            assert answer.status_code == 404 and "Plumbing" not in answer.text
        answer = await client.get(f"/leads/{world.plumbing_lead}")
        assert answer.status_code == 404 and "Plumbing" not in answer.text
        answer = await client.get(f"/calls?leadId={world.plumbing_lead}")
        assert "Plumbing" not in answer.text
        for target in (world.plumbing.org_id, world.agency.org_id, dashboard.org.org_id,
                       uuid.uuid4(), "not-an-id"):
            answer = await _switch(client, csrf, target)
            assert answer.status_code == 404, target
            assert "Plumbing" not in answer.text
        answer = await client.get("/clients")
        assert answer.status_code == 404 and "Plumbing" not in answer.text
        assert "Bright Dental" in (await client.get("/")).text  # still looking at its own
        forged = await client.post("/switch", data={"org": str(world.dental.org_id)})
        assert forged.status_code == 403  # no CSRF token
    # the client's token neither lists the agency's clients nor rolls them up
    async with _token_client(dashboard, world.dental.api_token) as api:
        for path in ("/api/clients", "/api/clients/overview"):
            answer = await api.get(path)
            assert answer.status_code == 404 and answer.json()["error"] == "not_found"
        answer = await api.get(f"/api/calls/{world.plumbing_calls[0]}")
        assert answer.status_code == 404
        assert (await api.get(f"/api/leads/{world.plumbing_lead}")).status_code == 404


async def test_a_stranger_cannot_switch_into_a_client(dashboard: Dashboard) -> None:
    world = await _agency(dashboard)
    client, csrf = await signed_in_client(dashboard)  # Acme Roofing's owner, no agency
    async with aclosing(client):
        for target in (world.dental.org_id, world.plumbing.org_id, world.agency.org_id):
            answer = await _switch(client, csrf, target)
            assert answer.status_code == 404
        overview = await client.get("/")
        assert overview.status_code == 200
        assert "Bright Dental" not in overview.text and "Harbor" not in overview.text
        assert "Acme Agency" not in overview.text and "/brand/" not in overview.text
        assert (await client.get("/clients")).status_code == 404
    assert (await dashboard.api.get("/api/clients")).status_code == 404


async def test_the_roll_up_equals_each_clients_own_overview(dashboard: Dashboard) -> None:
    world = await _agency(dashboard)
    async with _token_client(dashboard, world.agency.api_token) as api:
        listed = (await api.get("/api/clients")).json()
        assert listed == {"clients": [
            {"id": str(world.dental.org_id), "name": "Bright Dental", "markupPercent": 25.0},
            {"id": str(world.plumbing.org_id), "name": "Harbor Plumbing",
             "markupPercent": 0.0}]}
        rollup = (await api.get("/api/clients/overview")).json()
        assert (await api.get("/api/clients/overview?sort=id")).status_code == 400
        by_calls = (await api.get("/api/clients/overview?sort=-calls")).json()
    assert [c["name"] for c in by_calls["clients"]] == ["Bright Dental", "Harbor Plumbing"]
    assert [c["name"] for c in (rollup["clients"])] == ["Bright Dental", "Harbor Plumbing"]
    for row, org in zip(rollup["clients"], (world.dental, world.plumbing), strict=True):
        async with _token_client(dashboard, org.api_token) as own:
            overview = (await own.get("/api/stats/overview")).json()
        assert row["calls"] == overview["calls"] > 0
        assert row["minutes"] == overview["minutes"]
        assert row["newLeads"] == overview["newLeads"]
        assert row["successRate"] == overview["successRate"]
        assert row["evaluatedCalls"] == overview["evaluatedCalls"]
        # the client's own token answers what the client pays
        assert row["billedCost"] == overview["cost"]
    dental = rollup["clients"][0]
    assert dental["billedCost"] == float(agencies.billed(Decimal(repr(dental["cost"])),
                                                         MARKUP))
    assert rollup["clients"][1]["billedCost"] == rollup["clients"][1]["cost"]
    totals = rollup["totals"]
    assert totals["calls"] == sum(c["calls"] for c in rollup["clients"])
    assert totals["billedCost"] == round(sum(c["billedCost"] for c in rollup["clients"]), 6)

    client, _ = await signed_in_client(dashboard, AGENCY_OWNER)
    async with aclosing(client):
        page = await client.get("/clients?sort=-billed")
        assert page.status_code == 200
        text = page.text
        assert text.index("Bright Dental") < text.index("Harbor Plumbing")
        assert f'id="total-billed">{formats.money(totals["billedCost"])}<' in text
        assert f'id="total-cost">{formats.money(totals["cost"])}<' in text
        assert "sort=billed" in text  # the sorted column's link turns it round
        assert (await client.get("/clients?sort=nonsense")).status_code == 400


async def test_markup_for_the_client_both_for_the_agency(dashboard: Dashboard) -> None:
    world = await _agency(dashboard)
    async with _token_client(dashboard, world.dental.api_token) as own:
        api = (await own.get("/api/stats/overview")).json()
        newest = (await own.get("/api/calls")).json()["calls"][0]["id"]
        call = (await own.get(f"/api/calls/{newest}")).json()
    stored = await dashboard.connection.fetchrow(
        "SELECT cost, cost_breakdown FROM calls WHERE id = $1", call["id"])
    assert call["cost"] == float(agencies.billed(stored["cost"], MARKUP))
    assert set(call["costBreakdown"]) <= {"transport", "stt", "llm", "tts", "vapi", "total"}
    assert call["costBreakdown"]["llm"] == 0.025  # 0.02 with 25%
    base = await dashboard.connection.fetchval(
        "SELECT sum(cost) FROM daily_stats WHERE org_id = $1", world.dental.org_id)
    assert api["cost"] == float(agencies.billed(base, MARKUP))

    client, _ = await signed_in_client(dashboard, CLIENT_USER)
    async with aclosing(client):
        overview = (await client.get("/")).text
        assert f'id="stat-cost">{formats.money(api["cost"])}<' in overview
        assert formats.money(float(base)) not in overview
        assert "billed" not in overview
        page = (await client.get(f"/calls/{call['id']}")).text
        assert f'id="call-cost">{formats.money(call["cost"])}<' in page
        assert formats.money(float(stored["cost"])) + "<" not in page

    client, csrf = await signed_in_client(dashboard, AGENCY_OWNER)
    async with aclosing(client):
        assert (await _switch(client, csrf, world.dental.org_id)).status_code == 303
        overview = (await client.get("/")).text
        assert (f'id="stat-cost">{formats.money(float(base))} <span class="billed">billed '
                f'{formats.money(api["cost"])}</span><') in overview
        page = (await client.get(f"/calls/{call['id']}")).text
        assert (f'id="call-cost">{formats.money(float(stored["cost"]))} <span class="billed">'
                f'billed {formats.money(call["cost"])}</span>') in page
        assert (await _switch(client, csrf, world.plumbing.org_id)).status_code == 303
        assert "billed" not in (await client.get("/")).text  # no markup: one figure


async def test_branding_on_the_clients_pages_and_the_agency_host(dashboard: Dashboard) -> None:
    world = await _agency(dashboard)
    client, _ = await signed_in_client(dashboard, CLIENT_USER)
    async with aclosing(client):
        for path in PAGES:
            text = (await client.get(path)).text
            assert '<a class="brand" href="/"><img src="' + LOGO in text, path
            assert "Acme Agency</a>" in text and "· Acme Agency</title>" in text
            assert f'href="/brand/{world.agency.org_id}.css?v=aa3366"' in text
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=10) as client:
        css = await client.get(f"{dashboard.url}/brand/{world.agency.org_id}.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert f"--accent: {ACCENT};" in css.text
        assert "public" in css.headers["cache-control"]
        for missing in (f"/brand/{world.dental.org_id}.css",
                        f"/brand/{dashboard.org.org_id}.css", "/brand/nope.css",
                        f"/brand/{world.agency.org_id}"):
            assert (await client.get(f"{dashboard.url}{missing}")).status_code == 404

    async with httpx.AsyncClient(base_url=dashboard.url, timeout=10) as anonymous:
        branded = await anonymous.get("/login", headers={"Host": f"{HOST}:443"})
        assert "<h1>Acme Agency</h1>" in branded.text and LOGO in branded.text
        assert "· Acme Agency</title>" in branded.text
        plain = await anonymous.get("/login")
        assert "<h1>Calltrail</h1>" in plain.text and "Acme Agency" not in plain.text
        other = await anonymous.get("/login", headers={"Host": "calls.other.example"})
        assert "Acme Agency" not in other.text
    stranger, _ = await signed_in_client(dashboard)
    async with aclosing(stranger):
        assert "Acme Agency" not in (await stranger.get("/")).text


async def test_agency_owner_switches_between_clients_in_a_browser(page: Page,
                                                                  dashboard: Dashboard) -> None:
    world = await _agency(dashboard)
    await sign_in(page, dashboard, AGENCY_OWNER)
    await expect(page.locator("header .brand")).to_have_text("Acme Agency")
    await page.click("nav >> text=Clients")
    await page.wait_for_url(re.compile(r"/clients$"))
    await expect(page.locator("table.clients tbody tr")).to_have_count(2)
    await screenshot(page, "agency-clients")
    await screenshot(page, "agency-clients-phone", viewport=PHONE)

    await page.click("button.client-name >> text=Harbor Plumbing")
    await page.wait_for_url(f"{dashboard.url}/")
    await expect(page.locator("#switch-org")).to_have_value(str(world.plumbing.org_id))
    await page.click("nav >> text=Calls")
    await expect(page.locator("table.calls tbody tr")).to_have_count(3)
    await expect(page.locator("table.calls")).to_contain_text("Plumbing customer 0")
    await screenshot(page, "agency-client-calls")
    await screenshot(page, "agency-client-calls-phone", viewport=PHONE)

    await page.select_option("#switch-org", str(world.dental.org_id))
    await page.click("form.switcher button")
    await page.wait_for_url(f"{dashboard.url}/")
    await expect(page.locator("#stat-cost .billed")).to_be_visible()
    await screenshot(page, "agency-client-overview")

    await page.select_option("#switch-org", str(world.agency.org_id))
    await page.click("form.switcher button")
    await page.wait_for_url(f"{dashboard.url}/")
    await page.click("nav >> text=Clients")
    await expect(page.locator("table.clients tbody tr")).to_have_count(2)


async def test_the_sign_in_page_on_the_agency_host_is_branded_in_a_browser(
        dashboard: Dashboard) -> None:
    """Chromium asks for the agency's own host name (resolved to this api by a host rule):
    the sign-in page carries the agency's name and loads its accent stylesheet, which the
    page's CSP lets through; the same page on another name is Calltrail's."""
    await _agency(dashboard)
    port = dashboard.url.rsplit(":", 1)[1]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {HOST} 127.0.0.1"])
        try:
            context = await browser.new_context(viewport=DESKTOP)
            page = await context.new_page()
            page.set_default_timeout(10_000)
            refused: list[str] = []
            page.on("console", lambda message: refused.append(message.text)
                    if "Content Security Policy" in message.text else None)
            await page.goto(f"http://{HOST}:{port}/login")
            await expect(page.locator("h1")).to_have_text("Acme Agency")
            accent = await page.evaluate(
                "getComputedStyle(document.documentElement).getPropertyValue('--accent')")
            assert accent.strip() == ACCENT
            button = await page.evaluate(
                "getComputedStyle(document.querySelector('button.primary')).backgroundColor")
            assert button == "rgb(170, 51, 102)"  # #aa3366
            assert not [r for r in refused if "/brand/" in r], refused
            await screenshot(page, "agency-sign-in")
            await page.goto(f"{dashboard.url}/login")
            await expect(page.locator("h1")).to_have_text("Calltrail")
        finally:
            await browser.close()
