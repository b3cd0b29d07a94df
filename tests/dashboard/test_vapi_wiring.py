"""Settings, Vapi wiring: an owner sees where the account's assistants and numbers send,
wires them all in a browser, unwires one, and a viewer is refused."""

from __future__ import annotations

import contextlib
import uuid

from playwright.async_api import Page

from calltrail_testkit.fake_vapi import FakeVapi
from tests.dashboard.conftest import (
    PHONE,
    Dashboard,
    add_person,
    screenshot,
    sign_in,
    signed_in_client,
)


async def test_an_owner_wires_all_then_unwires_one(dashboard: Dashboard, page: Page,
                                                   fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    key = f"dash-wiring-{uuid.uuid4().hex}"
    account = fake.add_account(key, phone_numbers=2, assistants=2)
    account.assistants[0].update(server={"url": "https://crm.example.com/hook"},
                                 serverMessages=["transcript"])
    assert (await dashboard.api.post("/api/vapi/connect", json={"apiKey": key})
            ).status_code == 200
    first, second = (a["id"] for a in account.assistants)

    await sign_in(page, dashboard)
    await page.goto(f"{dashboard.url}/settings")
    await page.click("#vapi-wiring-link")
    await page.wait_for_url(f"{dashboard.url}/settings/vapi-wiring")
    row = page.locator(f"#item-{first}")
    assert "Elsewhere" in await row.inner_text()
    assert "https://crm.example.com/hook" in await row.inner_text()
    assert "status-update" in await row.inner_text()  # left out
    assert "No server" in await page.locator(f"#item-{second}").inner_text()
    await screenshot(page, "vapi-wiring-before")

    await page.click("#wire-all")
    await page.wait_for_url("**/settings/vapi-wiring?notice=wired&changed=4")
    assert "4 changed" in await page.locator("[role=status]").inner_text()
    for item in (*account.assistants, *account.phone_numbers):
        text = await page.locator(f"#item-{item['id']}").inner_text()
        assert "Sends here" in text and "Calltrail's" in text, text
    assert account.assistant(first)["serverMessages"] == [
        "transcript", "status-update", "end-of-call-report", "call.deleted"]
    await screenshot(page, "vapi-wiring")
    await screenshot(page, "vapi-wiring-mobile", viewport=PHONE)

    await page.click(f"#unwire-{first}")
    await page.wait_for_url("**/settings/vapi-wiring?notice=unwired&changed=1")
    assert "Elsewhere" in await page.locator(f"#item-{first}").inner_text()
    assert account.assistant(first)["server"] == {"url": "https://crm.example.com/hook"}
    assert "Sends here" in await page.locator(f"#item-{second}").inner_text()
    logged = await dashboard.connection.fetch(
        "SELECT actor, action FROM audit_log WHERE org_id = $1 AND action LIKE 'vapi.%wired' "
        "ORDER BY id", dashboard.org.org_id)
    assert [r["action"] for r in logged] == ["vapi.wired"] * 4 + ["vapi.unwired"]
    assert {r["actor"] for r in logged} == {f"user:{dashboard.email}"}


async def test_a_viewer_neither_sees_nor_changes_the_wiring(dashboard: Dashboard) -> None:
    await add_person(dashboard.connection, dashboard.org.org_id, "viewer@acme.example",
                     "viewer")
    viewer, csrf = await signed_in_client(dashboard, "viewer@acme.example")
    async with contextlib.aclosing(viewer):
        assert 'id="vapi-wiring-link"' not in (await viewer.get("/settings")).text
        assert (await viewer.get("/settings/vapi-wiring")).status_code == 403
        assert (await viewer.post("/settings/vapi-wiring/wire",
                                  data={"csrf": csrf})).status_code == 403
