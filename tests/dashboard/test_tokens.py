"""API tokens and the audit log in the dashboard (/settings/tokens, /settings/audit): made
and revoked by admins and owners, shown once, listed by prefix, creator and last use; a
viewer gets 403; another organization's token is not found. And a recording URL that is not
https never reaches the call page."""

from __future__ import annotations

import contextlib
import re
import uuid

import httpx

from calltrail_common import audit
from calltrail_common.organizations import create_organization, list_tokens
from tests.api.conftest import insert_call
from tests.dashboard.conftest import Dashboard, add_person, signed_in_client

VIEWER = "viewer@acme-roofing.example"
ADMIN = "admin@acme-roofing.example"


def _made_token(page: str) -> str:
    found = re.search(r'id="new-token-value">(ct_[A-Za-z0-9_-]+)<', page)
    assert found is not None, page
    return found.group(1)


async def test_an_admin_makes_a_token_seen_once_that_works_until_revoked(
        dashboard: Dashboard) -> None:
    await add_person(dashboard.connection, dashboard.org.org_id, ADMIN, "admin")
    client, csrf = await signed_in_client(dashboard, ADMIN)
    async with contextlib.aclosing(client):
        settings = await client.get("/settings")
        assert 'href="/settings/tokens"' in settings.text
        assert 'href="/settings/audit"' in settings.text
        made = await client.post("/settings/tokens", data={"csrf": csrf, "name": "CRM sync"})
        assert made.status_code == 200, made.text
        token = _made_token(made.text)
        assert made.headers["cache-control"] == "no-store"

        listed = await client.get("/settings/tokens")
        assert token not in listed.text  # shown once, never again
        (mine,) = [t for t in await list_tokens(dashboard.connection, dashboard.org.org_id)
                   if t.name == "CRM sync"]
        assert token.startswith(mine.prefix or "?") and mine.creator == ADMIN
        assert f"<code>{mine.prefix}</code>" in listed.text and ADMIN in listed.text

        async with httpx.AsyncClient(base_url=dashboard.url, timeout=10, headers={
                "Authorization": f"Bearer {token}"}) as machine:
            assert (await machine.get("/api/calls")).status_code == 200
            listed = (await client.get("/settings/tokens")).text
            last_used = listed.split(f'id="token-{mine.token_id}"')[1].split("</tr>")[0]
            assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", last_used), last_used

            revoked = await client.post(f"/settings/tokens/{mine.token_id}/revoke",
                                        data={"csrf": csrf})
            assert revoked.status_code == 303
            assert (await machine.get("/api/calls")).status_code == 401
        assert "Revoked" in (await client.get("/settings/tokens")).text

        logged = await audit.entries(dashboard.connection, dashboard.org.org_id)
        assert [(e.actor, e.action, e.target) for e in logged[:2]] == [
            (f"user:{ADMIN}", "token.revoked", mine.prefix),
            (f"user:{ADMIN}", "token.created", mine.prefix)]
        page = (await client.get("/settings/audit")).text
        assert page.count("token.revoked") == 1 and page.count("token.created") == 2
        assert f"user:{ADMIN}" in page and token not in page


async def test_a_bad_name_is_refused_and_nothing_is_made(dashboard: Dashboard) -> None:
    client, csrf = await signed_in_client(dashboard)
    async with contextlib.aclosing(client):
        refused = await client.post("/settings/tokens", data={"csrf": csrf, "name": "x" * 81})
        assert refused.status_code == 400 and "new-token-value" not in refused.text
    assert len(await list_tokens(dashboard.connection, dashboard.org.org_id)) == 1


async def test_a_viewer_gets_403_and_no_controls(dashboard: Dashboard) -> None:
    await add_person(dashboard.connection, dashboard.org.org_id, VIEWER, "viewer")
    (first,) = await list_tokens(dashboard.connection, dashboard.org.org_id)
    client, csrf = await signed_in_client(dashboard, VIEWER)
    async with contextlib.aclosing(client):
        settings = await client.get("/settings")
        assert "/settings/tokens" not in settings.text and "/settings/audit" not in settings.text
        for path in ("/settings/tokens", "/settings/audit"):
            page = await client.get(path)
            assert page.status_code == 403 and "Revoke" not in page.text, path
        made = await client.post("/settings/tokens", data={"csrf": csrf, "name": "mine"})
        assert made.status_code == 403 and "ct_" not in made.text
        revoke = await client.post(f"/settings/tokens/{first.token_id}/revoke",
                                   data={"csrf": csrf})
        assert revoke.status_code == 403
    assert [t.revoked_at for t in await list_tokens(dashboard.connection,
                                                    dashboard.org.org_id)] == [None]
    assert (await dashboard.api.get("/api/calls")).status_code == 200


async def test_another_organizations_token_cannot_be_revoked(dashboard: Dashboard) -> None:
    other = await create_organization(dashboard.connection, "Someone else")
    client, csrf = await signed_in_client(dashboard)
    async with contextlib.aclosing(client):
        for token_id in (other.token_id, uuid.uuid4(), "not-an-id"):
            answer = await client.post(f"/settings/tokens/{token_id}/revoke",
                                       data={"csrf": csrf})
            assert answer.status_code == 404, token_id
        listed = (await client.get("/settings/tokens")).text
        assert str(other.token_id) not in listed
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=10, headers={
            "Authorization": f"Bearer {other.api_token}"}) as machine:
        assert (await machine.get("/api/calls")).status_code == 200
    assert [e.action for e in await audit.entries(dashboard.connection, other.org_id)] == [
        "token.created"]


async def test_a_revoke_without_the_forms_csrf_token_is_refused(dashboard: Dashboard) -> None:
    (first,) = await list_tokens(dashboard.connection, dashboard.org.org_id)
    client, _ = await signed_in_client(dashboard)
    async with contextlib.aclosing(client):
        refused = await client.post(f"/settings/tokens/{first.token_id}/revoke", data={})
        assert refused.status_code == 403
    assert (await dashboard.api.get("/api/calls")).status_code == 200


async def test_the_call_page_plays_only_https_recordings(dashboard: Dashboard) -> None:
    call_id = await insert_call(dashboard.connection, dashboard.org.org_id,
                                recording_url="http://rec.example/plain.wav",
                                stereo_recording_url="javascript:alert(1)")
    client, _ = await signed_in_client(dashboard)
    async with contextlib.aclosing(client):
        page = await client.get(f"/calls/{call_id}")
    assert page.status_code == 200
    assert "rec.example" not in page.text and "javascript:" not in page.text
    assert "No recording for this call." in page.text
