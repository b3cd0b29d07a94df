"""The dashboard names assistants and phone numbers as the organization's Vapi account calls
them, with the id on hover (decision 43): the overview's table by assistant, the calls list,
a call and a lead's calls. An id without a known name shows shortened, whole on hover."""

from __future__ import annotations

import re
from contextlib import aclosing

from tests.api.conftest import insert_call, insert_vapi_name
from tests.dashboard.conftest import Dashboard, signed_in_client

UUID_ID = "7f3c2a91-5d4e-4b8a-9c1f-0e6d2b3a4c5d"


def _cells(html: str, css_class: str) -> list[tuple[str, str]]:
    """(title, text) of every span of that class."""
    return re.findall(rf'<span class="{css_class}" title="([^"]*)">([^<]*)</span>', html)


async def test_names_with_ids_on_hover_and_short_unknown_ids(dashboard: Dashboard) -> None:
    org_id = dashboard.org.org_id
    await insert_vapi_name(dashboard.connection, org_id, "assistant", "asst-riley",
                           "Riley <front desk>")
    await insert_vapi_name(dashboard.connection, org_id, "phone_number", "pn-main",
                           "Main line")
    call_id = await insert_call(dashboard.connection, org_id, assistant_id=UUID_ID,
                                phone_number_id="pn-main", lead_id=dashboard.lead_id)
    client, _ = await signed_in_client(dashboard)
    async with aclosing(client):
        overview = (await client.get("/")).text
        assert ("asst-riley", "Riley &lt;front desk&gt;") in _cells(overview, "vapi-name")
        assert ("asst-morgan", "asst-mor…") in _cells(overview, "vapi-id")
        assert ">asst-riley<" not in overview and ">asst-morgan<" not in overview

        calls = (await client.get("/calls")).text
        assert ("asst-riley", "Riley &lt;front desk&gt;") in _cells(calls, "vapi-name")
        assert (UUID_ID, "7f3c2a91…") in _cells(calls, "vapi-id")
        assert f">{UUID_ID}<" not in calls

        call = (await client.get(f"/calls/{call_id}")).text
        assistant = re.search(r'id="call-assistant">(.*?)</dd>', call)
        number = re.search(r'id="call-phone-number">(.*?)</dd>', call)
        assert assistant and assistant.group(1) == (
            f'<span class="vapi-id" title="{UUID_ID}">7f3c2a91…</span>')
        assert number and number.group(1) == (
            '<span class="vapi-name" title="pn-main">Main line</span>')

        lead = (await client.get(f"/leads/{dashboard.lead_id}")).text
        assert ("asst-riley", "Riley &lt;front desk&gt;") in _cells(lead, "vapi-name")
        assert (UUID_ID, "7f3c2a91…") in _cells(lead, "vapi-id")

        # Named later (metrics-sync's next round): the same pages show the name.
        await insert_vapi_name(dashboard.connection, org_id, "assistant", UUID_ID, "Morgan")
        call = (await client.get(f"/calls/{call_id}")).text
        assert f'<span class="vapi-name" title="{UUID_ID}">Morgan</span>' in call
