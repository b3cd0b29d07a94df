"""The dashboard's security rules over plain HTTP: CSRF on every form, the session cookie's
flags, the headers, and no token or key in what a page answers."""

from __future__ import annotations

import re

import httpx
import pytest

from api.dashboard.app import CONTENT_SECURITY_POLICY
from tests.dashboard.conftest import Dashboard

FORMS = ["/login", "/logout", "/settings/connect", "/settings/disconnect", "/settings/sync"]


async def _signed_in(dashboard: Dashboard) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client signed in through the form; the CSRF token of its pages."""
    client = httpx.AsyncClient(base_url=dashboard.url, timeout=10)
    login = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf is not None
    response = await client.post("/login", data={"csrf": csrf.group(1),
                                                 "token": dashboard.org.api_token})
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    page = await client.get("/settings")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return client, csrf.group(1)


@pytest.mark.parametrize("path", FORMS)
async def test_a_post_without_the_csrf_token_is_refused(dashboard: Dashboard, path: str
                                                        ) -> None:
    client, csrf = await _signed_in(dashboard)
    try:
        for data in ({}, {"csrf": "forged"}, {"csrf": csrf + "x"}):
            response = await client.post(path, data={**data, "apiKey": "k",
                                                     "token": dashboard.org.api_token})
            assert response.status_code == 403, (path, data)
        # The right token from a client without the nonce cookie is refused too.
        stranger = httpx.AsyncClient(base_url=dashboard.url, cookies={
            "calltrail_session": dashboard.org.api_token})
        async with stranger:
            assert (await stranger.post(path, data={"csrf": csrf})).status_code == 403
        # The session still works: nothing above changed it.
        assert (await client.get("/settings")).status_code == 200
    finally:
        await client.aclose()


async def test_headers_and_no_secrets_in_pages(dashboard: Dashboard) -> None:
    client, _ = await _signed_in(dashboard)
    try:
        for path in ("/", "/calls", f"/calls/{dashboard.call_ids[0]}", "/leads",
                     f"/leads/{dashboard.lead_id}", "/usage", "/settings", "/static/style.css"):
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
            assert dashboard.org.api_token not in response.text, path
            assert "<script" not in response.text and " style=" not in response.text, path
        assert dashboard.org.webhook_secret in (await client.get("/settings")).text
        # Pages are not in the JSON API's OpenAPI document, and the API keeps its headers.
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert all(p.startswith("/api/") for p in paths)
        api = await dashboard.api.get("/api/stats/overview")
        assert "content-security-policy" not in api.headers
    finally:
        await client.aclose()


async def test_pages_need_a_valid_session(dashboard: Dashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, cookies={
            "calltrail_session": "ct_revoked-or-made-up"}) as client:
        for path in ("/", "/calls", "/usage", "/settings", "/leads"):
            response = await client.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/login"
        await dashboard.connection.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE org_id = $1", dashboard.org.org_id)
        client.cookies.set("calltrail_session", dashboard.org.api_token)
        assert (await client.get("/")).status_code == 303
