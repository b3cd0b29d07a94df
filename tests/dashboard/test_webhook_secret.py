"""The webhook page: the secret shown to admins and owners only, rotated with an overlap
or with none, the previous secret revoked, by owners only, each change in the audit log."""

from __future__ import annotations

import contextlib
import re

import httpx

from tests.dashboard.conftest import Dashboard, add_person, signed_in_client


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def _secrets(dashboard: Dashboard) -> tuple[str, str | None]:
    current = await dashboard.connection.fetchval(
        "SELECT secret FROM webhook_endpoints WHERE org_id = $1", dashboard.org.org_id)
    previous = await dashboard.connection.fetchval(
        "SELECT p.secret FROM webhook_previous_secrets p JOIN webhook_endpoints e "
        "ON e.id = p.endpoint_id WHERE e.org_id = $1 AND p.valid_until > now()",
        dashboard.org.org_id)
    return current, previous


async def test_owners_rotate_and_revoke_with_an_audit_trail(dashboard: Dashboard) -> None:
    owner, csrf = await signed_in_client(dashboard)
    async with contextlib.aclosing(owner):
        page = await owner.get("/settings/webhook")
        assert page.status_code == 200 and dashboard.org.webhook_secret in page.text
        assert "rotate-secret" in page.text and "revoke-previous" not in page.text
        rotated = await owner.post("/settings/webhook/rotate",
                                   data={"csrf": csrf, "overlapHours": "24"})
        assert rotated.status_code == 303
        current, previous = await _secrets(dashboard)
        assert previous == dashboard.org.webhook_secret and current != previous
        page = await owner.get("/settings/webhook")
        assert current in page.text and previous not in page.text
        assert "revoke-previous" in page.text
        revoked = await owner.post("/settings/webhook/revoke", data={"csrf": _csrf(page)})
        assert revoked.headers["location"] == "/settings/webhook?notice=revoked"
        assert await _secrets(dashboard) == (current, None)
        # No overlap: the replaced secret is refused at once.
        await owner.post("/settings/webhook/rotate", data={"csrf": _csrf(page),
                                                           "overlapHours": "0"})
        newest, previous = await _secrets(dashboard)
        assert newest != current and previous is None
    logged = await dashboard.connection.fetch(
        "SELECT actor, action, detail::text AS detail FROM audit_log WHERE org_id = $1 "
        "AND action LIKE 'webhook_secret.%' ORDER BY id", dashboard.org.org_id)
    actor = f"user:{dashboard.email}"
    assert [(r["actor"], r["action"]) for r in logged] == [
        (actor, "webhook_secret.rotated"), (actor, "webhook_secret.previous_revoked"),
        (actor, "webhook_secret.rotated")]
    assert all(s not in r["detail"] for r in logged
               for s in (dashboard.org.webhook_secret, current, newest))


async def test_viewers_see_no_secret_and_admins_cannot_rotate(dashboard: Dashboard) -> None:
    for role in ("viewer", "admin"):
        email = f"{role}@acme-roofing.example"
        await add_person(dashboard.connection, dashboard.org.org_id, email, role)
        client, csrf = await signed_in_client(dashboard, email)
        async with contextlib.aclosing(client):
            page = await client.get("/settings/webhook")
            assert page.status_code == 200
            assert (dashboard.org.webhook_secret in page.text) is (role == "admin")
            assert "rotate-secret" not in page.text
            for action in ("rotate", "revoke"):
                refused = await client.post(f"/settings/webhook/{action}",
                                            data={"csrf": csrf, "overlapHours": "0"})
                assert refused.status_code == 403, (role, action)
                assert "cannot rotate or revoke the webhook secret" in refused.text
    assert await _secrets(dashboard) == (dashboard.org.webhook_secret, None)
    assert await dashboard.connection.fetchval(
        "SELECT count(*) FROM audit_log WHERE action LIKE 'webhook_secret.%'") == 0
