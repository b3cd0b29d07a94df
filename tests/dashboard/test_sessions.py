"""Server-side sessions: a new id and a new CSRF nonce at every sign-in, the session ended
at sign-out (a copied cookie opens nothing after), idle and absolute expiry, a removed
member out at the next request, and __Host- Secure cookies with HSTS behind TLS."""

from __future__ import annotations

import contextlib
import re

import httpx

from calltrail_common import people
from tests.api.conftest import serve_api
from tests.dashboard.conftest import PASSWORD, Dashboard, signed_in_client


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_sign_in_rotates_the_session_and_the_nonce(dashboard: Dashboard) -> None:
    client = httpx.AsyncClient(base_url=dashboard.url, timeout=10)
    async with contextlib.aclosing(client):
        login = await client.get("/login")
        nonce_before = client.cookies["calltrail_csrf"]
        # A session id planted in the browser before sign-in (by a sibling site, say) is
        # never the one signed in.
        signed = await client.post("/login", headers={
            "cookie": f"calltrail_session=planted-by-someone-else; calltrail_csrf={nonce_before}"},
            data={"csrf": _csrf(login), "email": dashboard.email, "password": PASSWORD})
        assert signed.status_code == 303
        first = signed.cookies["calltrail_session"]
        assert first != "planted-by-someone-else"
        assert client.cookies["calltrail_csrf"] != nonce_before
        assert (await client.get("/calls")).status_code == 200
        # Signing in again makes another id and ends the one the browser had.
        login = await client.get("/login")  # signed in: sent on to the overview
        assert login.status_code == 303
    second, csrf = await signed_in_client(dashboard)
    async with contextlib.aclosing(second):
        assert second.cookies["calltrail_session"] != first
        copied = second.cookies["calltrail_session"]
        assert (await second.post("/logout", data={"csrf": csrf})).status_code == 303
        async with httpx.AsyncClient(base_url=dashboard.url, cookies={
                "calltrail_session": copied}) as thief:
            answer = await thief.get("/")
            assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert await dashboard.connection.fetchval(
        "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id "
        "WHERE u.email = $1", dashboard.email) == 1  # the first client's, never signed out


async def test_idle_absolute_and_membership_end_a_session(dashboard: Dashboard) -> None:
    for ending in ("UPDATE sessions SET last_seen_at = now() - interval '9 hours'",
                   "UPDATE sessions SET expires_at = now() - interval '1 second'",
                   "DELETE FROM memberships"):
        client, _ = await signed_in_client(dashboard)
        async with contextlib.aclosing(client):
            assert (await client.get("/")).status_code == 200
            await dashboard.connection.execute(ending)
            answer = await client.get("/")
            assert answer.status_code == 303, ending
            assert answer.headers["location"] == "/login"
        if ending.startswith("DELETE"):
            break
        await dashboard.connection.execute("DELETE FROM sessions")
    # Without a membership, signing in says so rather than opening anything.
    login = httpx.AsyncClient(base_url=dashboard.url)
    async with contextlib.aclosing(login):
        page = await login.get("/login")
        refused = await login.post("/login", data={"csrf": _csrf(page),
                                                   "email": dashboard.email,
                                                   "password": PASSWORD})
        assert refused.status_code == 403 and "no organization" in refused.text


async def test_host_prefixed_secure_cookies_and_hsts_behind_tls(dashboard: Dashboard) -> None:
    settings = dashboard.settings.model_copy(update={"dashboard_force_https": True})
    async with serve_api(settings) as url, httpx.AsyncClient(base_url=url) as client:
        login = await client.get("/login")
        assert login.headers["strict-transport-security"].startswith("max-age=31536000")
        nonce = login.headers["set-cookie"]
        assert nonce.startswith("__Host-calltrail_csrf=")
        assert "Secure" in nonce and "Path=/" in nonce and "Domain" not in nonce
        # httpx keeps Secure cookies from plain http, so they are sent by hand.
        token = nonce.split(";")[0].split("=", 1)[1]
        signed = await client.post("/login", headers={"cookie": f"__Host-calltrail_csrf={token}"},
                                   data={"csrf": _csrf(login), "email": dashboard.email,
                                         "password": PASSWORD})
        assert signed.status_code == 303
        cookies = signed.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("__Host-calltrail_session="))
        assert all(flag in session for flag in ("Secure", "HttpOnly", "SameSite=lax", "Path=/"))
        assert "Domain" not in session
        # The plain names mean nothing when the prefix is required.
        session_id = session.split(";")[0].split("=", 1)[1]
        plain = await client.get("/", headers={"cookie": f"calltrail_session={session_id}"})
        assert plain.status_code == 303
        prefixed = await client.get(
            "/", headers={"cookie": f"__Host-calltrail_session={session_id}"})
        assert prefixed.status_code == 200
        api = await client.get("/api/calls", headers={
            "authorization": f"Bearer {dashboard.org.api_token}"})
        assert api.headers["strict-transport-security"].startswith("max-age=31536000")
    # Over plain http without the setting: no HSTS (a developer's machine).
    assert "strict-transport-security" not in (await dashboard.api.get("/api/calls")).headers


async def test_a_changed_password_ends_every_session(dashboard: Dashboard) -> None:
    client, _ = await signed_in_client(dashboard)
    async with contextlib.aclosing(client):
        user = await people.find_user(dashboard.connection, dashboard.email)
        assert user is not None
        await people.set_password(dashboard.connection, user.id, "another long password")
        assert (await client.get("/")).status_code == 303
