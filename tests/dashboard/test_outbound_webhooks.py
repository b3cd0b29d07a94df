"""Settings, Outbound webhooks in the dashboard, browser-free: an admin adds an endpoint
(its secret shown once), reads its delivery log, sends a delivery again, edits, disables,
enables, rotates and deletes it; the notice when the dispatcher disabled one for failing;
viewers see none of it. Deliveries are written as the processor and the dispatcher would
leave them."""

from __future__ import annotations

import contextlib
import html
import re
import uuid
from datetime import UTC, datetime, timedelta

from api.dashboard.routes.outbound_webhooks import EVENT_HINTS
from calltrail_common import audit, outbound_endpoints
from tests.dashboard.conftest import Dashboard, add_person, signed_in_client
from tests.support.delivery_log import insert_delivery

ADMIN = "admin@acme-roofing.example"
VIEWER = "viewer@acme-roofing.example"
LIST = "/settings/outbound-webhooks"
URL = "https://crm.acme-roofing.example/hooks/calltrail?key=receivers-own"


def _secret(page: str) -> str:
    found = re.search(r'id="new-secret-value">(whsec_[A-Za-z0-9+/=]+)<', page)
    assert found is not None, page
    return found.group(1)


def _row(page: str, row_id: str) -> str:
    found = re.search(rf'<tr id="{row_id}">(.*?)</tr>', page, re.DOTALL)
    assert found is not None, row_id
    return found.group(1)


def test_every_event_type_has_its_words() -> None:
    assert tuple(EVENT_HINTS) == outbound_endpoints.EVENT_TYPES


async def test_an_admin_manages_an_endpoint_and_its_delivery_log(dashboard: Dashboard) -> None:
    org_id = dashboard.org.org_id
    connection = dashboard.connection
    await add_person(connection, org_id, ADMIN, "admin")
    client, csrf = await signed_in_client(dashboard, ADMIN)
    async with contextlib.aclosing(client):
        settings = await client.get("/settings")
        assert f'href="{LIST}"' in settings.text
        empty = await client.get(LIST)
        assert empty.status_code == 200 and "No endpoints yet" in empty.text
        for event_type in outbound_endpoints.EVENT_TYPES:
            assert f'name="event.{event_type}"' in empty.text

        form = {"csrf": csrf, "url": URL, "description": "CRM", "event.call.ended": "on",
                "event.lead.created": "on"}
        assert (await client.post(LIST, data={**form, "csrf": "forged"})).status_code == 403
        refused = await client.post(LIST, data={**form, "url": "https://127.0.0.1/hook"})
        assert refused.status_code == 400
        assert "The host is a loopback address." in refused.text
        # What was typed is kept for the next try.
        assert 'value="CRM"' in refused.text and "checked" in _checked(refused.text)
        none = await client.post(LIST, data={"csrf": csrf, "url": URL})
        assert none.status_code == 400 and "Choose at least one event type" in none.text
        assert await outbound_endpoints.list_endpoints(connection, org_id) == []

        made = await client.post(LIST, data=form)
        assert made.status_code == 200, made.text
        secret = _secret(made.text)
        [endpoint] = await outbound_endpoints.list_endpoints(connection, org_id)
        assert (endpoint.url, endpoint.event_types) == (URL, ("call.ended", "lead.created"))
        assert await connection.fetchval(
            "SELECT secret FROM outbound_endpoints WHERE id = $1", endpoint.id) == secret
        listed = await client.get(LIST)
        assert secret not in listed.text
        assert "Enabled" in _row(listed.text, f"endpoint-{endpoint.id}")
        page_url = f"{LIST}/{endpoint.id}"

        # The log, newest first, 25 a page; "Send again" on all but the pending ones.
        start = datetime.now(UTC) - timedelta(days=1)
        deliveries = [await insert_delivery(
            connection, org_id, endpoint.id, created_at=start + timedelta(minutes=i),
            state=("succeeded", "dead", "pending")[i % 3]) for i in range(27)]
        page = await client.get(page_url)
        assert page.status_code == 200 and secret not in page.text
        assert f'id="delivery-{deliveries[26]}"' in page.text
        assert f'id="delivery-{deliveries[1]}"' not in page.text
        dead = _row(page.text, f"delivery-{deliveries[25]}")
        assert "Dead" in dead and "HTTP 503" in dead and "812 ms" in dead and "Send again" in dead
        assert "Send again" not in _row(page.text, f"delivery-{deliveries[26]}")  # pending
        older = re.search(r'href="([^"]+)" rel="next"', page.text)
        assert older is not None
        second = await client.get(html.unescape(older.group(1)))
        assert f'id="delivery-{deliveries[1]}"' in second.text
        assert f'id="delivery-{deliveries[26]}"' not in second.text

        sent = await client.post(f"{page_url}/deliveries/{deliveries[25]}/send-again",
                                 data={"csrf": csrf})
        assert sent.status_code == 303 and sent.headers["location"] == f"{page_url}?notice=sent"
        assert dict(await connection.fetchrow(
            "SELECT state, queued_at FROM outbound_deliveries WHERE id = $1",
            deliveries[25])) == {"state": "pending", "queued_at": None}
        assert "Sent again" in (await client.get(sent.headers["location"])).text
        elsewhere = await client.post(f"{page_url}/deliveries/{uuid.uuid4()}/send-again",
                                      data={"csrf": csrf})
        assert elsewhere.status_code == 404

        edited = await client.post(page_url, data={
            "csrf": csrf, "url": URL + "&v=2", "description": "CRM v2",
            "event.usage.day_closed": "on"})
        assert edited.status_code == 303, edited.text
        changed = await outbound_endpoints.get_endpoint(connection, org_id, endpoint.id)
        assert changed is not None
        assert (changed.url, changed.description, changed.event_types) == (
            URL + "&v=2", "CRM v2", ("usage.day_closed",))
        bad = await client.post(page_url, data={"csrf": csrf, "url": "http://crm.example/",
                                                "event.call.ended": "on"})
        assert bad.status_code == 400 and "must start with https://" in bad.text

        assert (await client.post(f"{page_url}/disable", data={"csrf": csrf})).status_code \
            == 303
        disabled = await client.get(page_url)
        assert 'id="enable-endpoint"' in disabled.text
        assert 'class="send-again"' not in disabled.text
        refused = await client.post(f"{page_url}/deliveries/{deliveries[24]}/send-again",
                                    data={"csrf": csrf})
        assert refused.status_code == 409 and "enable it first" in refused.text
        assert (await client.post(f"{page_url}/enable", data={"csrf": csrf})).status_code \
            == 303
        assert 'id="disable-endpoint"' in (await client.get(page_url)).text

        rotated = await client.post(f"{page_url}/rotate-secret", data={"csrf": csrf})
        assert rotated.status_code == 200
        new_secret = _secret(rotated.text)
        assert new_secret != secret and new_secret not in (await client.get(page_url)).text

        kept = await client.post(f"{page_url}/delete", data={"csrf": csrf})
        assert kept.status_code == 400 and "Tick the box" in kept.text
        gone = await client.post(f"{page_url}/delete", data={"csrf": csrf, "confirm": "yes"})
        assert gone.status_code == 303
        assert "Endpoint deleted" in (await client.get(gone.headers["location"])).text
        assert (await client.get(page_url)).status_code == 404
        assert await connection.fetchval("SELECT count(*) FROM outbound_deliveries") == 0

    entries = [e for e in await audit.entries(connection, org_id, 100)
               if e.action.startswith("outbound_")]
    assert {e.actor for e in entries} == {f"user:{ADMIN}"}
    assert [e.action for e in reversed(entries)] == [
        "outbound_endpoint.created", "outbound_delivery.sent_again",
        "outbound_endpoint.updated", "outbound_endpoint.disabled",
        "outbound_endpoint.enabled", "outbound_endpoint.secret_rotated",
        "outbound_endpoint.deleted"]
    assert not any(s in repr(entries) for s in (secret, new_secret, "receivers-own"))


def _checked(page: str) -> str:
    found = re.search(r'name="event\.call\.ended"[^>]*>', page)
    assert found is not None
    return found.group(0)


async def test_an_endpoint_disabled_for_failing_is_noticed_and_viewers_see_none_of_it(
        dashboard: Dashboard) -> None:
    org_id = dashboard.org.org_id
    connection = dashboard.connection
    made = await outbound_endpoints.create(connection, org_id, url=URL, description="CRM",
                                           event_types=["call.ended"])
    endpoint = made.endpoint
    # The dispatcher: days of failures, the last a timeout, then disabled for failing.
    await insert_delivery(connection, org_id, endpoint.id, state="dead", last_status=None,
                          last_error="timeout")
    await connection.execute(
        """UPDATE outbound_endpoints SET failing_since = now() - interval '3 days',
                  disabled_at = now(), disabled_reason = 'failing' WHERE id = $1""",
        endpoint.id)
    await add_person(connection, org_id, VIEWER, "viewer")

    owner, csrf = await signed_in_client(dashboard)
    async with contextlib.aclosing(owner):
        for path in ("/settings", LIST, f"{LIST}/{endpoint.id}"):
            page = await owner.get(path)
            assert page.status_code == 200, path
            notice = re.search(r'<p class="alert error failing-notice".*?</p>', page.text,
                               re.DOTALL)
            assert notice is not None, path
            assert "stopped sending to" in notice.group(0)
            assert "its last error: timeout" in notice.group(0)
            assert f'href="{LIST}/{endpoint.id}"' in notice.group(0)
            assert made.secret not in page.text
        assert "Disabled: failing" in _row((await owner.get(LIST)).text,
                                           f"endpoint-{endpoint.id}")
        await owner.post(f"{LIST}/{endpoint.id}/enable", data={"csrf": csrf})
        assert "failing-notice" not in (await owner.get("/settings")).text
        again = await outbound_endpoints.get_endpoint(connection, org_id, endpoint.id)
        assert again is not None and (again.enabled, again.failing_since) == (True, None)
    await outbound_endpoints.disable(connection, org_id, endpoint.id)
    await connection.execute(
        "UPDATE outbound_endpoints SET disabled_reason = 'failing' WHERE id = $1", endpoint.id)

    viewer, _ = await signed_in_client(dashboard, VIEWER)
    async with contextlib.aclosing(viewer):
        settings = await viewer.get("/settings")
        assert LIST not in settings.text and "failing-notice" not in settings.text
        assert URL not in settings.text
        for path in (LIST, f"{LIST}/{endpoint.id}"):
            assert (await viewer.get(path)).status_code == 403
