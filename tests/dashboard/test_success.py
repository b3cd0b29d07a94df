"""The dashboard's side of structured outputs and scorecards (decision 41), server-rendered:
a call's page shows them by name; Settings, Call success, lets admins and owners choose
which one counts as success, and the overview's success rate follows."""

from __future__ import annotations

import contextlib
import datetime as dt
import re

import httpx

from call_processor.deliveries import Delivery
from call_processor.handlers import process_batch
from calltrail_common.snapshots import snapshot_message
from tests.api.test_success_measure import BOOKED, CALLS, QA, _tags
from tests.dashboard.conftest import Dashboard, add_person, signed_in_client

DAY = {"startDate": "2026-11-03", "endDate": "2026-11-03"}


async def _processed(dashboard: Dashboard) -> None:
    received = dt.datetime(2026, 11, 3, 16, tzinfo=dt.UTC)
    deliveries = []
    for call in CALLS:
        message = snapshot_message(dashboard.org.org_id, call, received_at=received)
        deliveries.append(Delivery.received(next(_tags), message.message_id or "",
                                            message.headers or {}, message.body))
    outcome = await process_batch(dashboard.connection, deliveries)
    assert not outcome.dead


def _success_stat(page: httpx.Response) -> str:
    found = re.search(r'id="stat-success">([^<]*)<', page.text)
    assert found is not None, page.text
    return found.group(1)


async def test_a_call_page_shows_its_outputs_and_scorecards_by_name(dashboard: Dashboard
                                                                    ) -> None:
    await _processed(dashboard)
    client, _ = await signed_in_client(dashboard)
    async with contextlib.aclosing(client):
        page = await client.get("/calls/call-1")
        assert page.status_code == 200
        outputs = page.text[page.text.index('id="structured-outputs"'):]
        outputs = outputs[:outputs.index("</section>")]
        assert re.search(r"<td>Appointment booked</td><td>Yes</td>", outputs)
        assert re.search(r"<td>CSAT</td><td>9</td>", outputs)
        assert "<td>Customer details</td>" in outputs and "&#34;email&#34;: " \
            "&#34;dana@example.com&#34;" in outputs
        assert outputs.index("Appointment booked") < outputs.index("CSAT") < \
            outputs.index("Customer details")
        cards = page.text[page.text.index('id="scorecards"'):]
        assert re.search(r"<td>Support QA</td><td class=\"num\">100.0 / 100</td>", cards)
        assert "None extracted." not in page.text  # it has outputs
        lost = await client.get("/calls/call-2")
        assert re.search(r"<td>Appointment booked</td><td>No</td>", lost.text)
        assert "30.0 / 100" in lost.text


async def test_admins_choose_what_counts_as_success_and_the_overview_follows(
        dashboard: Dashboard) -> None:
    await _processed(dashboard)
    await add_person(dashboard.connection, dashboard.org.org_id, "viewer@acme.example",
                     "viewer")
    await add_person(dashboard.connection, dashboard.org.org_id, "admin@acme.example",
                     "admin")
    viewer, viewer_csrf = await signed_in_client(dashboard, "viewer@acme.example")
    admin, csrf = await signed_in_client(dashboard, "admin@acme.example")
    async with contextlib.aclosing(viewer), contextlib.aclosing(admin):
        assert 'href="/settings/success"' in (await admin.get("/settings")).text
        before = _success_stat(await admin.get("/", params=DAY))
        assert before == "67%"  # by successEvaluation: 2 of 3

        seen = await viewer.get("/settings/success")
        assert seen.status_code == 200 and "success evaluation" in seen.text
        assert 'id="choose-success"' not in seen.text  # a viewer reads only
        refused = await viewer.post("/settings/success", data={
            "csrf": viewer_csrf, "source": f"output:{BOOKED}"})
        assert refused.status_code == 403

        page = await admin.get("/settings/success")
        assert f'value="output:{BOOKED}"' in page.text and f'value="scorecard:{QA}"' in \
            page.text
        assert "Output: Appointment booked" in page.text and "Scorecard: Support QA" in \
            page.text
        chosen = await admin.post("/settings/success", data={
            "csrf": csrf, "source": f"output:{BOOKED}"})
        assert chosen.status_code == 303
        page = await admin.get(chosen.headers["location"])
        assert "The structured output <b>Appointment booked</b>" in page.text
        assert _success_stat(await admin.get("/", params=DAY)) == "75%"  # 3 of 4

        bad = await admin.post("/settings/success", data={
            "csrf": csrf, "source": f"scorecard:{QA}", "passMark": "120"})
        assert bad.status_code == 400 and "pass mark must be a number from 0 to 100" in \
            bad.text
        typed = await admin.post("/settings/success", data={
            "csrf": csrf, "source": "other", "kind": "scorecard", "sourceId": QA,
            "passMark": "25"})
        assert typed.status_code == 303
        page = await admin.get("/settings/success")
        assert "The scorecard <b>Support QA</b>" in page.text and "<b>25.0</b>" in page.text
        assert _success_stat(await admin.get("/", params=DAY)) == "100%"

        cleared = await admin.post("/settings/success/clear", data={"csrf": csrf})
        assert cleared.status_code == 303
        assert _success_stat(await admin.get("/", params=DAY)) == before
    targets = [r["target"] for r in await dashboard.connection.fetch(
        "SELECT target FROM audit_log WHERE action = 'success_measure.set' AND actor ="
        " 'user:admin@acme.example' ORDER BY at, id")]
    assert targets == [f"output {BOOKED} is true", f"scorecard {QA} scores at least 25.00",
                       "analysis.successEvaluation"]
