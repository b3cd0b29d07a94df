"""Roles on every dashboard action, and the People page, over HTTP against the real api:
viewers read and are refused (403) every action without seeing a secret, admins act up to
admin, the last owner stays, and invitations are shown or mailed (a real SMTP server)."""

from __future__ import annotations

import dataclasses
import re
import uuid

import httpx
import pytest
from pydantic import SecretStr

from calltrail_common import audit, people
from calltrail_testkit.fake_vapi import FakeVapi
from calltrail_testkit.processes import free_port
from tests.api.conftest import serve_api
from tests.dashboard.conftest import PASSWORD, Dashboard, add_person, signed_in_client
from tests.mailbox import link_in, receiving_mail

VIEWER = "viewer@acme-roofing.example"
ADMIN = "admin@acme-roofing.example"


def _user_id(page: str, email: str) -> str:
    found = re.search(rf'{re.escape(email)}.*?name="user" value="([0-9a-f-]+)"', page, re.S)
    assert found is not None, email
    return found.group(1)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def _actions(dashboard: Dashboard) -> list[tuple[str, str, str | None]]:
    """The organization's audit entries, oldest first, but for the first token that
    `org create` made (logged as the CLI's)."""
    return [(e.actor, e.action, e.target) for e in
            reversed(await audit.entries(dashboard.connection, dashboard.org.org_id))
            if e.action != "token.created"]


async def _join(url: str, link: str) -> httpx.AsyncClient:
    """A fresh browser-like client that follows an invitation and chooses a password."""
    client = httpx.AsyncClient(base_url=url, timeout=10)
    page = await client.get(link)
    assert page.status_code == 200, page.text
    joined = await client.post(link, data={"csrf": _csrf(page.text), "password": PASSWORD,
                                           "confirm": PASSWORD})
    assert joined.status_code == 303 and joined.headers["location"] == "/", joined.text
    return client


async def test_a_viewer_reads_every_page_is_refused_every_action_and_sees_no_secret(
        dashboard: Dashboard, fake_vapi: tuple[FakeVapi, str]) -> None:
    await add_person(dashboard.connection, dashboard.org.org_id, VIEWER, "viewer")
    client, csrf = await signed_in_client(dashboard, VIEWER)
    try:
        for path in ("/", "/calls", f"/calls/{dashboard.call_ids[0]}", "/leads",
                     f"/leads/{dashboard.lead_id}", "/usage", "/settings", "/settings/people",
                     "/settings/webhook", "/nowhere"):
            page = await client.get(path)
            assert page.status_code in (200, 404), path
            assert dashboard.org.webhook_secret not in page.text, path
            assert dashboard.org.api_token not in page.text, path
        settings = (await client.get("/settings")).text
        assert 'id="webhook-url"' in settings and 'id="webhook-secret"' not in settings
        assert 'action="/settings/connect"' not in settings
        people_page = (await client.get("/settings/people")).text
        assert "/settings/people/invite" not in people_page
        assert "/settings/people/remove" not in people_page

        owner = await people.find_user(dashboard.connection, dashboard.email)
        assert owner is not None
        owner_id = str(owner.id)
        fake, _ = fake_vapi
        api_key = f"key-{uuid.uuid4()}"
        fake.add_account(api_key)
        forbidden = {
            "/settings/connect": {"apiKey": api_key},
            "/settings/disconnect": {}, "/settings/sync": {},
            "/settings/people/invite": {"email": "new@example.com", "role": "viewer"},
            "/settings/people/role": {"user": owner_id, "role": "viewer"},
            "/settings/people/remove": {"user": owner_id},
        }
        for path, fields in forbidden.items():
            answer = await client.post(path, data={"csrf": csrf, **fields})
            assert answer.status_code == 403, path
            assert "Not allowed" in answer.text and "As <strong>viewer</strong>" in answer.text
        assert await _actions(dashboard) == []
        assert [m.role for m in await people.members(dashboard.connection,
                                                     dashboard.org.org_id)] == ["owner",
                                                                                "viewer"]
        assert (await client.get("/settings")).status_code == 200  # still signed in
    finally:
        await client.aclose()


async def test_owner_actions_on_the_vapi_account_are_audited(
        dashboard: Dashboard, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    api_key = f"key-{uuid.uuid4()}"
    fake.add_account(api_key, calls=3, days=2)
    client, csrf = await signed_in_client(dashboard)
    try:
        assert dashboard.org.webhook_secret in (await client.get("/settings/webhook")).text
        for path, fields in (("/settings/connect", {"apiKey": api_key}),
                             ("/settings/sync", {}), ("/settings/disconnect", {})):
            answer = await client.post(path, data={"csrf": csrf, **fields})
            assert answer.status_code == 303, (path, answer.text)
        actor = f"user:{dashboard.email}"
        assert [(a, action) for a, action, _ in await _actions(dashboard)] == [
            (actor, "vapi.connected"), (actor, "vapi.sync_requested"),
            (actor, "vapi.disconnected")]
        assert api_key not in str(await _actions(dashboard))
    finally:
        await client.aclose()


async def test_an_admin_acts_up_to_admin_and_never_on_an_owner(dashboard: Dashboard) -> None:
    await add_person(dashboard.connection, dashboard.org.org_id, ADMIN, "admin")
    await add_person(dashboard.connection, dashboard.org.org_id, VIEWER, "viewer")
    client, csrf = await signed_in_client(dashboard, ADMIN)
    try:
        page = (await client.get("/settings/people")).text
        assert '<option value="owner"' not in page
        assert dashboard.email in page and "only an owner can change this" in page
        invited = await client.post("/settings/people/invite", data={
            "csrf": csrf, "email": "boss@example.com", "role": "owner"})
        assert invited.status_code == 403 and "cannot invite an owner" in invited.text
        owner = await people.find_user(dashboard.connection, dashboard.email)
        assert owner is not None
        for path, fields in (("/settings/people/role", {"role": "viewer"}),
                             ("/settings/people/remove", {})):
            answer = await client.post(path, data={"csrf": csrf, "user": str(owner.id),
                                                   **fields})
            assert answer.status_code == 403, path
            assert "cannot change an owner" in answer.text
        viewer_id = _user_id(page, VIEWER)
        promoted = await client.post("/settings/people/role", data={
            "csrf": csrf, "user": viewer_id, "role": "owner"})
        assert promoted.status_code == 403 and "cannot give the role owner" in promoted.text
        promoted = await client.post("/settings/people/role", data={
            "csrf": csrf, "user": viewer_id, "role": "admin"})
        assert promoted.status_code == 303
        invited = await client.post("/settings/people/invite", data={
            "csrf": csrf, "email": "helper@example.com", "role": "admin"})
        assert invited.status_code == 200 and 'id="invite-link"' in invited.text
        assert await _actions(dashboard) == [
            (f"user:{ADMIN}", "user.role_changed", VIEWER),
            (f"user:{ADMIN}", "user.invited", "helper@example.com")]
        roles = {m.email: m.role for m in await people.members(dashboard.connection,
                                                                dashboard.org.org_id)}
        assert roles == {dashboard.email: "owner", ADMIN: "admin", VIEWER: "admin"}
    finally:
        await client.aclose()


async def test_the_last_owner_stays(dashboard: Dashboard) -> None:
    client, csrf = await signed_in_client(dashboard)
    try:
        page = (await client.get("/settings/people")).text
        me = _user_id(page, dashboard.email)
        for path, fields in (("/settings/people/remove", {}),
                             ("/settings/people/role", {"role": "admin"})):
            answer = await client.post(path, data={"csrf": csrf, "user": me, **fields})
            assert answer.status_code == 409, path
            assert "keeps at least one owner" in answer.text
        # With a second owner, the first may step down, then leave.
        second = await add_person(dashboard.connection, dashboard.org.org_id,
                                  "second@acme-roofing.example", "owner")
        assert (await client.post("/settings/people/role", data={
            "csrf": csrf, "user": me, "role": "admin"})).status_code == 303
        other = await client.post("/settings/people/remove", data={
            "csrf": csrf, "user": str(second)})
        assert other.status_code == 403  # an admin now: the owner is out of reach
        left = await client.post("/settings/people/remove", data={"csrf": csrf, "user": me})
        assert left.status_code == 303
        assert (await client.get("/settings")).headers["location"] == "/login"
        actor = f"user:{dashboard.email}"
        assert await _actions(dashboard) == [(actor, "user.role_changed", dashboard.email),
                                             (actor, "user.removed", dashboard.email)]
    finally:
        await client.aclose()


async def test_an_invitation_without_mail_shows_its_link_once_and_it_works(
        dashboard: Dashboard) -> None:
    client, csrf = await signed_in_client(dashboard)
    try:
        answer = await client.post("/settings/people/invite", data={
            "csrf": csrf, "email": " New.Person@Example.com ", "role": "admin"})
        assert answer.status_code == 200
        assert "No mail is set up here" in answer.text
        found = re.search(r'id="invite-link">([^<]+)<', answer.text)
        assert found is not None
        link = found.group(1).removeprefix(dashboard.settings.dashboard_base_url)
        page = (await client.get("/settings/people")).text
        assert "new.person@example.com" in page and link not in page  # pending, link gone
        again = await client.post("/settings/people/invite", data={
            "csrf": csrf, "email": dashboard.email, "role": "viewer"})
        assert again.status_code == 409 and "already a member" in again.text
    finally:
        await client.aclose()
    joined = await _join(dashboard.url, link)
    try:
        page = (await joined.get("/settings/people")).text
        assert "Signed in as <strong>new.person@example.com</strong>, admin" in page
        assert dashboard.org.webhook_secret in (await joined.get("/settings/webhook")).text
    finally:
        await joined.aclose()
    assert await _actions(dashboard) == [
        (f"user:{dashboard.email}", "user.invited", "new.person@example.com")]


async def test_an_invitation_is_mailed_and_not_shown_when_smtp_is_set_up(
        dashboard: Dashboard) -> None:
    with receiving_mail() as mailbox:
        settings = dashboard.settings.model_copy(update={
            "smtp_url": SecretStr(mailbox.url), "smtp_from": "Calltrail <calltrail@example.com>"})
        async with serve_api(settings) as url:
            mailing = dataclasses.replace(dashboard, url=url, settings=settings)
            client, csrf = await signed_in_client(mailing)
            try:
                answer = await client.post("/settings/people/invite", data={
                    "csrf": csrf, "email": VIEWER, "role": "viewer"})
                assert answer.status_code == 200
                assert f"Invitation mailed to {VIEWER}" in answer.text
                assert 'id="invite-link"' not in answer.text
                assert "/invite/" not in answer.text
            finally:
                await client.aclose()
            [mail] = await mailbox.wait_for(1)
            assert mail["To"] == VIEWER and mail["From"] == "Calltrail <calltrail@example.com>"
            assert "Acme Roofing" in mail["Subject"]
            link = link_in(mail)
            assert link.startswith(f"{settings.dashboard_base_url}/invite/")
            joined = await _join(url, link.removeprefix(settings.dashboard_base_url))
            try:
                assert (await joined.get("/")).status_code == 200
            finally:
                await joined.aclose()


async def test_an_invitation_whose_mail_fails_says_so_and_shows_the_link(
        dashboard: Dashboard, capsys: pytest.CaptureFixture[str]) -> None:
    closed = free_port()  # nothing listens there
    settings = dashboard.settings.model_copy(update={
        "smtp_url": SecretStr(f"smtp://127.0.0.1:{closed}"), "smtp_timeout_seconds": 2})
    async with serve_api(settings) as url:
        client, csrf = await signed_in_client(dataclasses.replace(dashboard, url=url))
        try:
            answer = await client.post("/settings/people/invite", data={
                "csrf": csrf, "email": VIEWER, "role": "viewer"})
            assert answer.status_code == 200
            assert "could not be mailed" in answer.text
            link = re.search(r'id="invite-link">[^<]+/invite/([^<]+)<', answer.text)
            assert link is not None
        finally:
            await client.aclose()
    logged = capsys.readouterr()
    assert "invitation_not_mailed" in logged.out + logged.err
    assert link.group(1) not in logged.out + logged.err


async def test_an_old_invitation_never_changes_a_membership(dashboard: Dashboard) -> None:
    # Invited as viewer long ago, made owner since, the link followed now.
    link = await people.invite(dashboard.connection, dashboard.org.org_id, dashboard.email,
                               "viewer", None)
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=10) as client:
        page = await client.get(f"/invite/{link.token}")
        assert "You already have an account" in page.text
        accepted = await client.post(f"/invite/{link.token}", data={"csrf": _csrf(page.text)})
        assert accepted.status_code == 303 and accepted.headers["location"] == "/login"
    [member] = await people.members(dashboard.connection, dashboard.org.org_id)
    assert member.role == "owner"
