"""A pending invitation can be cancelled by whoever may make it: its link opens nothing
after, the audit log says who cancelled it, and an admin cannot cancel an owner's."""

from __future__ import annotations

import contextlib

from calltrail_common import audit, people
from tests.dashboard.conftest import Dashboard, add_person, signed_in_client


async def test_a_cancelled_invitation_opens_nothing(dashboard: Dashboard) -> None:
    connection = dashboard.connection
    viewer_link = await people.invite(connection, dashboard.org.org_id, "v@x.example",
                                      "viewer", None)
    owner_link = await people.invite(connection, dashboard.org.org_id, "o@x.example",
                                     "owner", None)
    await add_person(connection, dashboard.org.org_id, "admin@acme-roofing.example", "admin")
    admin, csrf = await signed_in_client(dashboard, "admin@acme-roofing.example")
    async with contextlib.aclosing(admin):
        page = (await admin.get("/settings/people")).text
        assert page.count('action="/settings/people/cancel"') == 1  # the viewer's only
        refused = await admin.post("/settings/people/cancel",
                                   data={"csrf": csrf, "email": "o@x.example"})
        assert refused.status_code == 403 and "cannot cancel" in refused.text
        missing = await admin.post("/settings/people/cancel",
                                   data={"csrf": csrf, "email": "nobody@x.example"})
        assert missing.status_code == 404
        done = await admin.post("/settings/people/cancel",
                                data={"csrf": csrf, "email": "V@X.example"})
        assert done.status_code == 303
        assert (await admin.get(f"/invite/{viewer_link.token}")).status_code == 404
        assert (await admin.get(f"/invite/{owner_link.token}")).status_code == 200
    assert [p.email for p in await people.pending_invites(connection, dashboard.org.org_id)] \
        == ["o@x.example"]
    entries = [(e.actor, e.action, e.target)
               for e in await audit.entries(connection, dashboard.org.org_id)
               if e.action == "user.invitation_cancelled"]
    assert entries == [("user:admin@acme-roofing.example", "user.invitation_cancelled",
                        "v@x.example")]
    assert viewer_link.token not in repr(entries)
