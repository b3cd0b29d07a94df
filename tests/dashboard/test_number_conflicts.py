"""A phone-number conflict (one organization's account lists a number another has) is
shown on both organizations' settings pages, never settled silently, and to nobody else."""

from __future__ import annotations

import contextlib
import uuid

from calltrail_common.organizations import create_organization
from tests.dashboard.conftest import Dashboard, add_person, signed_in_client


async def test_both_sides_of_a_conflict_see_it_and_a_third_does_not(
        dashboard: Dashboard) -> None:
    claimant = await create_organization(dashboard.connection, "Claimant")
    third = await create_organization(dashboard.connection, "Third")
    await dashboard.connection.execute(
        """INSERT INTO phone_number_conflicts (id, org_id, vapi_org_id, vapi_phone_number_id,
                                               number, held_by)
           VALUES ($1, $2, 'vapi-org-claimant', 'pn-contested', '+14155550123', $3)""",
        uuid.uuid4(), claimant.org_id, dashboard.org.org_id)
    people = {"holder@acme-roofing.example": (dashboard.org.org_id, "we have it"),
              "owner@claimant.example": (claimant.org_id, "our account lists it"),
              "owner@third.example": (third.org_id, None)}
    for email, (org_id, says) in people.items():
        if org_id != dashboard.org.org_id:
            await add_person(dashboard.connection, org_id, email, "viewer")
        client, _ = await signed_in_client(
            dashboard, email if org_id != dashboard.org.org_id else dashboard.email)
        async with contextlib.aclosing(client):
            page = (await client.get("/settings")).text
        if says is None:
            assert "pn-contested" not in page and "+14155550123" not in page
        else:
            assert 'id="number-conflicts"' in page and "pn-contested" in page, email
            assert says in page, email
