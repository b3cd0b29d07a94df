"""The dashboard's security rules over plain HTTP: CSRF on every form, the session cookie's
flags, the headers, and no token or key in what a page answers."""

from __future__ import annotations

import httpx
import pytest

from api.dashboard.app import content_security_policy
from tests.dashboard.conftest import PASSWORD, Dashboard, signed_in_client

FORMS = ["/login", "/logout", "/settings/connect", "/settings/disconnect", "/settings/sync",
         "/settings/people/invite", "/settings/people/role", "/settings/people/remove",
         "/reset"]


async def _signed_in(dashboard: Dashboard) -> tuple[httpx.AsyncClient, str]:
    return await signed_in_client(dashboard)


@pytest.mark.parametrize("path", FORMS)
async def test_a_post_without_the_csrf_token_is_refused(dashboard: Dashboard, path: str
                                                        ) -> None:
    client, csrf = await _signed_in(dashboard)
    try:
        for data in ({}, {"csrf": "forged"}, {"csrf": csrf + "x"}):
            response = await client.post(path, data={**data, "apiKey": "k",
                                                     "email": dashboard.email,
                                                     "password": PASSWORD})
            assert response.status_code == 403, (path, data)
        # The right token from a client without the nonce cookie is refused too.
        stranger = httpx.AsyncClient(base_url=dashboard.url, cookies={
            "calltrail_session": client.cookies["calltrail_session"]})
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
                     f"/leads/{dashboard.lead_id}", "/usage", "/settings", "/settings/people",
                     "/reset", "/static/style.css"):
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-security-policy"] == content_security_policy(
                dashboard.settings.vapi_api_base_url)
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
            assert dashboard.org.api_token not in response.text, path
            assert "<script" not in response.text and " style=" not in response.text, path
        assert dashboard.org.webhook_secret not in (await client.get("/settings")).text
        assert dashboard.org.webhook_secret in (await client.get("/settings/webhook")).text
        # Pages are not in the JSON API's OpenAPI document, and the API keeps its headers.
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert all(p.startswith("/api/") for p in paths)
        api = await dashboard.api.get("/api/stats/overview")
        assert "content-security-policy" not in api.headers
    finally:
        await client.aclose()


async def test_pages_need_a_valid_session(dashboard: Dashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, cookies={
            "calltrail_session": "made-up-session-id"}) as client:
        for path in ("/", "/calls", "/usage", "/settings", "/leads"):
            response = await client.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/login"
        # The organization's API token is no session: the dashboard is for people.
        client.cookies.set("calltrail_session", dashboard.org.api_token)
        assert (await client.get("/")).status_code == 303
