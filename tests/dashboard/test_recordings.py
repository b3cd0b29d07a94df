"""The call page's player loads real audio: its source is the dashboard's same-origin
recording route, which redirects to Vapi's fresh signed URL (the fake's WAV), allowed by the
page's CSP."""

from __future__ import annotations

from playwright.async_api import Page

from calltrail_testkit.fake_vapi import FakeVapi
from tests.api.conftest import insert_call
from tests.dashboard.conftest import Dashboard, screenshot, sign_in


async def test_the_player_loads_the_recording_from_vapi(
        page: Page, dashboard: Dashboard, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    account = fake.add_account("dashboard-recording-key", phone_numbers=1, calls=1)
    connected = await dashboard.api.post("/api/vapi/connect",
                                         json={"apiKey": account.api_key})
    assert connected.status_code == 200, connected.text
    call_id = await insert_call(dashboard.connection, dashboard.org.org_id,
                                id=next(iter(account.calls)))
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    files_before = fake.file_requests

    await sign_in(page, dashboard)
    await page.goto(f"{dashboard.url}/calls/{call_id}")
    audio = page.locator("audio")
    assert await audio.get_attribute("src") == f"/calls/{call_id}/recording?channel=mono"
    await page.wait_for_function(
        "() => document.querySelector('audio').duration > 1", timeout=10_000)
    duration = await audio.evaluate("element => element.duration")
    assert 1.4 < duration < 1.6
    assert await audio.evaluate("element => element.currentSrc.startsWith("
                                "location.origin + '/calls/')")
    assert fake.file_requests > files_before  # the bytes came from the (fake) storage
    assert any(path == f"/call/{call_id}/mono-recording"
               for _, path, _ in account.request_log)
    assert not refused, refused
    await screenshot(page, "call-recording")
