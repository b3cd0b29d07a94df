"""Password resets and sign-in throttling over HTTP against the real api, with a real SMTP
server (aiosmtpd) for the reset mail."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from tests.api.conftest import serve_api
from tests.dashboard.conftest import PASSWORD, Dashboard, add_person, signed_in_client
from tests.mailbox import Mailbox, link_in, receiving_mail

NEW_PASSWORD = "a brand new passphrase"


@contextlib.asynccontextmanager
async def _served(dashboard: Dashboard, **settings: object) -> AsyncIterator[Dashboard]:
    """The same database served by an api with these settings."""
    changed = dashboard.settings.model_copy(update=settings)
    async with serve_api(changed) as url:
        yield dataclasses.replace(dashboard, url=url, settings=changed)


@contextlib.asynccontextmanager
async def _mailing(dashboard: Dashboard) -> AsyncIterator[tuple[Dashboard, Mailbox]]:
    with receiving_mail() as mailbox:
        async with _served(dashboard, smtp_url=SecretStr(mailbox.url)) as served:
            yield served, mailbox


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def _form(client: httpx.AsyncClient, path: str, **fields: str) -> httpx.Response:
    """GET the page, then POST its form with `fields` (and its CSRF token)."""
    page = await client.get(path)
    return await client.post(path, data={"csrf": _csrf(page.text), **fields})


async def _sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await _form(client, "/login", email=email, password=password)


async def test_a_reset_by_mail_works_once_signs_in_and_ends_the_other_sessions(
        dashboard: Dashboard, capsys: pytest.CaptureFixture[str]) -> None:
    async with _mailing(dashboard) as (served, mailbox):
        elsewhere, _ = await signed_in_client(served)  # another browser, signed in
        async with contextlib.aclosing(elsewhere), httpx.AsyncClient(
                base_url=served.url, timeout=10) as client:
            login = await client.get("/login")
            assert 'href="/reset"' in login.text and "Forgot your password?" in login.text
            asked = await _form(client, "/reset", email=served.email.upper())
            assert asked.status_code == 200
            assert "a link to choose a new password is on its way" in asked.text
            [mail] = await mailbox.wait_for(1)
            assert mail["To"] == served.email and "Reset" in mail["Subject"]
            link = link_in(mail).removeprefix(served.settings.dashboard_base_url)
            assert link.startswith("/reset/") and link not in asked.text

            page = await client.get(link)
            assert page.status_code == 200 and served.email in page.text
            differ = await client.post(link, data={"csrf": _csrf(page.text),
                                                   "password": NEW_PASSWORD,
                                                   "confirm": NEW_PASSWORD + "!"})
            assert differ.status_code == 400 and "differ" in differ.text
            short = await client.post(link, data={"csrf": _csrf(page.text),
                                                  "password": "short", "confirm": "short"})
            assert short.status_code == 400 and "at least 10 characters" in short.text
            done = await client.post(link, data={"csrf": _csrf(page.text),
                                                 "password": NEW_PASSWORD,
                                                 "confirm": NEW_PASSWORD})
            assert done.status_code == 303 and done.headers["location"] == "/"
            assert (await client.get("/")).status_code == 200  # signed in
            # The session in the other browser ended with the old password.
            assert (await elsewhere.get("/settings")).headers["location"] == "/login"

            again = await client.get(link)
            assert again.status_code == 404 and "not valid" in again.text
            signed_out_form = _csrf((await client.get("/reset")).text)
            reused = await client.post(link, data={"csrf": signed_out_form,
                                                   "password": PASSWORD, "confirm": PASSWORD})
            assert reused.status_code == 404

        async with httpx.AsyncClient(base_url=served.url, timeout=10) as fresh:
            assert (await _sign_in(fresh, served.email, PASSWORD)).status_code == 401
            assert (await _sign_in(fresh, served.email, NEW_PASSWORD)).status_code == 303
    logged = capsys.readouterr()
    assert "reset_mailed" in logged.out + logged.err
    assert link.rsplit("/", 1)[1] not in logged.out + logged.err


async def test_a_reset_request_answers_the_same_for_an_unknown_address(
        dashboard: Dashboard) -> None:
    async with _mailing(dashboard) as (served, mailbox), httpx.AsyncClient(
            base_url=served.url, timeout=10) as client:
        unknown = await _form(client, "/reset", email="nobody@example.com")
        known = await _form(client, "/reset", email=served.email)
        assert unknown.status_code == known.status_code == 200

        def answer(response: httpx.Response, email: str) -> str:
            notice = re.search(r'role="status">([^<]+)<', response.text)
            assert notice is not None
            return notice.group(1).replace(email, "E")

        assert answer(unknown, "nobody@example.com") == answer(known, served.email)
        await mailbox.wait_for(1)
        await asyncio.sleep(0.5)
        assert [m["To"] for m in mailbox.messages] == [served.email]
        # Asking again and again fills no mailbox: three open links at most.
        for _ in range(4):
            await _form(client, "/reset", email=served.email)
        await mailbox.wait_for(3)
        await asyncio.sleep(0.5)
        assert len(mailbox.messages) == 3


async def test_made_up_and_expired_reset_links_say_so(dashboard: Dashboard) -> None:
    async with _mailing(dashboard) as (served, mailbox), httpx.AsyncClient(
            base_url=served.url, timeout=10) as client:
        made_up = await client.get("/reset/made-up-token")
        assert made_up.status_code == 404 and "not valid" in made_up.text
        assert (await client.get("/reset/" + "x" * 5000)).status_code == 404
        await _form(client, "/reset", email=served.email)
        link = link_in((await mailbox.wait_for(1))[0]).removeprefix(
            served.settings.dashboard_base_url)
        await served.connection.execute(
            "UPDATE user_links SET expires_at = now() - interval '1 second'")
        expired = await client.get(link)
        assert expired.status_code == 404 and "it expired" in expired.text
        # An invitation's link is no reset link, nor the other way round.
        invite = link.replace("/reset/", "/invite/")
        assert (await client.get(invite)).status_code == 404


async def test_without_mail_a_reset_request_sends_to_an_operator(dashboard: Dashboard) -> None:
    async with httpx.AsyncClient(base_url=dashboard.url, timeout=10) as client:
        answer = await _form(client, "/reset", email=dashboard.email)
        assert answer.status_code == 200 and "sends no mail" in answer.text
    assert await dashboard.connection.fetchval("SELECT count(*) FROM user_links") == 0


async def test_too_many_failures_for_an_account_answer_429_without_checking(
        dashboard: Dashboard) -> None:
    async with _served(dashboard, sign_in_account_failures=3, sign_in_address_failures=100
                       ) as served, httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        for _ in range(3):
            assert (await _sign_in(client, served.email, "wrong password")).status_code == 401
        for password in ("wrong password", PASSWORD):  # the right one is not even checked
            refused = await _sign_in(client, served.email.upper(), password)
            assert refused.status_code == 429
            assert ("Too many failed sign-ins for this account; try again in 15 minutes."
                    in refused.text)
            assert 840 < int(refused.headers["retry-after"]) <= 900
        # Another account from the same address is not held up.
        other = "admin@acme-roofing.example"
        await add_person(served.connection, served.org.org_id, other, "admin")
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as another:
            assert (await _sign_in(another, other, PASSWORD)).status_code == 303
        # Once the failures are older than the window, the right password works, and the
        # success clears the account's failures.
        await served.connection.execute(
            "UPDATE sign_in_failures SET at = at - interval '14 minutes'")
        waiting = await _sign_in(client, served.email, PASSWORD)
        assert "try again in 1 minute." in waiting.text
        await served.connection.execute(
            "UPDATE sign_in_failures SET at = at - interval '1 minute'")
        assert (await _sign_in(client, served.email, "wrong password")).status_code == 401
        assert (await _sign_in(client, served.email, PASSWORD)).status_code == 303
        assert await served.connection.fetchval(
            "SELECT count(*) FROM sign_in_failures WHERE key = $1",
            f"account:{served.email}") == 0


async def test_too_many_failures_from_an_address_answer_429(dashboard: Dashboard) -> None:
    async with _served(dashboard, sign_in_account_failures=100, sign_in_address_failures=4
                       ) as served, httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        for n in range(4):
            wrong = await _sign_in(client, f"guess{n}@example.com", "wrong password")
            assert wrong.status_code == 401
        refused = await _sign_in(client, served.email, PASSWORD)
        assert refused.status_code == 429
        assert "Too many failed sign-ins from this address; try again in 15 minutes." in (
            refused.text)
        # Rows older than the window are pruned when a failure is written.
        await served.connection.execute(
            "UPDATE sign_in_failures SET at = at - interval '1 hour'")
        assert (await _sign_in(client, "guess@example.com", "wrong")).status_code == 401
        assert await served.connection.fetchval("SELECT count(*) FROM sign_in_failures") == 2
