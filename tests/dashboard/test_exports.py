"""The calls and leads pages' "Export CSV": the link carries the page's filters, the file
holds what the filters show (every page of it, as `/api/.../export` answers it), and the
export is audited under the person's name."""

from __future__ import annotations

import csv
import html
import io
import re
from contextlib import aclosing

from tests.dashboard.conftest import Dashboard, add_person, signed_in_client


def _export_link(page: str) -> str:
    found = re.search(r'<a href="([^"]+)" download class="export">Export CSV</a>', page)
    assert found is not None, "no Export link on the page"
    return html.unescape(found.group(1))


async def test_export_what_the_filters_show(dashboard: Dashboard) -> None:
    email = "viewer-export@acme-roofing.example"
    await add_person(dashboard.connection, dashboard.org.org_id, email, "viewer")
    client, _ = await signed_in_client(dashboard, email)
    async with aclosing(client):
        page = await client.get("/calls", params={"direction": "outbound", "status": "ended"})
        link = _export_link(page.text)
        assert link == "/calls/export?direction=outbound&status=ended"
        response = await client.get(link)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert re.fullmatch(r'attachment; filename="calls-\d{4}-\d{2}-\d{2}\.csv"',
                            response.headers["content-disposition"])
        rows = list(csv.DictReader(io.StringIO(response.text)))
        api = await dashboard.api.get("/api/calls/export",
                                      params={"direction": "outbound", "status": "ended"})
        assert rows == list(csv.DictReader(io.StringIO(api.text)))
        assert len(rows) == 10 and {r["direction"] for r in rows} == {"outbound"}

        page = await client.get("/leads", params={"q": "Dana"})
        response = await client.get(_export_link(page.text))
        [lead] = list(csv.DictReader(io.StringIO(response.text)))
        assert lead["name"] == "Dana Whitfield" and lead["id"] == str(dashboard.lead_id)

        # A filter the page refuses sends back to the page, which says why.
        refused = await client.get("/calls/export", params={"direction": "sideways"})
        assert refused.status_code == 303
        assert refused.headers["location"] == "/calls?direction=sideways"

    entries = await dashboard.connection.fetch(
        "SELECT actor, target, detail FROM audit_log WHERE org_id = $1 "
        "AND action = 'data.exported' AND actor LIKE 'user:%' ORDER BY at",
        dashboard.org.org_id)
    assert [(e["actor"], e["target"], e["detail"]) for e in entries] == [
        (f"user:{email}", "calls",
         {"format": "csv", "filters": {"direction": "outbound", "status": "ended"}}),
        (f"user:{email}", "leads", {"format": "csv", "filters": {"q": "Dana"}})]
