"""Users, their passwords, invitation and reset links, and who may open which
organization, against a real database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from calltrail_common import db, people
from calltrail_common.organizations import create_organization

PASSWORD = "a long enough password"


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _org(connection: asyncpg.Connection, name: str, *, kind: str = "business",
               agency_id: uuid.UUID | None = None) -> uuid.UUID:
    org = await create_organization(connection, name)
    await connection.execute("UPDATE organizations SET kind = $2, agency_id = $3 WHERE id = $1",
                             org.org_id, kind, agency_id)
    return org.org_id


def test_passwords_are_argon2id_and_checked() -> None:
    hashed = people.hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert people.password_matches(hashed, PASSWORD)
    assert not people.password_matches(hashed, PASSWORD + "x")
    assert not people.password_matches(None, PASSWORD)
    assert not people.password_matches("not a hash", PASSWORD)
    assert not people.password_matches(hashed, "x" * (people.MAX_PASSWORD_LENGTH + 1))
    for short_or_long in ("short", "x" * (people.MAX_PASSWORD_LENGTH + 1)):
        with pytest.raises(people.PeopleError):
            people.hash_password(short_or_long)


@pytest.mark.parametrize("raw", ["", "no-at-sign", "a@b", "two@@example.com", "sp ace@x.io",
                                 "x" * 250 + "@example.com"])
def test_what_is_not_an_email_address(raw: str) -> None:
    with pytest.raises(people.PeopleError):
        people.normalize_email(raw)


def test_emails_are_compared_lowercase_and_trimmed() -> None:
    assert people.normalize_email("  Dana@Example.COM ") == "dana@example.com"


async def test_an_invitation_works_once_and_makes_a_member(
        connection: asyncpg.Connection) -> None:
    org_id = await _org(connection, "Acme")
    link = await people.invite(connection, org_id, "New.Person@example.com", "admin", None)
    opened = await people.open_link(connection, link.token, "invite")
    assert opened is not None and opened.user.email == "new.person@example.com"
    assert not opened.user.has_password and opened.role == "admin"
    assert await people.open_link(connection, link.token, "reset") is None  # wrong purpose
    with pytest.raises(people.PeopleError, match="choose a password"):
        await people.use_link(connection, link.token, "invite", None)
    used = await people.use_link(connection, link.token, "invite", PASSWORD)
    assert used.org_id == org_id
    assert [(m.email, m.role, m.joined) for m in await people.members(connection, org_id)] \
        == [("new.person@example.com", "admin", True)]
    with pytest.raises(people.PeopleError, match="not valid"):
        await people.use_link(connection, link.token, "invite", PASSWORD)
    assert await people.authenticate(connection, "NEW.person@example.com", PASSWORD) \
        is not None
    assert await people.authenticate(connection, "new.person@example.com", "wrong one!!") \
        is None
    assert await people.authenticate(connection, "nobody@example.com", PASSWORD) is None


async def test_expired_and_made_up_links_grant_nothing(connection: asyncpg.Connection) -> None:
    org_id = await _org(connection, "Acme")
    link = await people.invite(connection, org_id, "late@example.com", "viewer", None)
    await connection.execute("UPDATE user_links SET expires_at = now() - interval '1 second'")
    assert await people.open_link(connection, link.token, "invite") is None
    for token in (link.token, "made-up", "x" * 500):
        with pytest.raises(people.PeopleError):
            await people.use_link(connection, token, "invite", PASSWORD)
    assert await people.members(connection, org_id) == []


async def test_a_reset_sets_the_password_and_ends_sessions(
        connection: asyncpg.Connection) -> None:
    org_id = await _org(connection, "Acme")
    user_id = await people.ensure_user(connection, "dana@example.com")
    await people.set_password(connection, user_id, PASSWORD)
    await people.add_member(connection, org_id, user_id, "owner")
    await connection.execute(
        "INSERT INTO sessions (id_sha256, user_id, org_id, expires_at) "
        "VALUES ('\\x00', $1, $2, now() + interval '1 hour')", user_id, org_id)
    assert await people.request_reset(connection, "nobody@example.com") is None
    assert await people.request_reset(connection, "not an address") is None
    link = await people.request_reset(connection, "Dana@example.com")
    assert link is not None
    await people.use_link(connection, link.token, "reset", "a new long password")
    assert await people.authenticate(connection, "dana@example.com", PASSWORD) is None
    assert await people.authenticate(connection, "dana@example.com",
                                     "a new long password") is not None
    assert await connection.fetchval("SELECT count(*) FROM sessions") == 0


async def test_agency_members_open_its_clients_and_nothing_else(
        connection: asyncpg.Connection) -> None:
    agency = await _org(connection, "Agency", kind="agency")
    client_a = await _org(connection, "Client A", agency_id=agency)
    client_b = await _org(connection, "Client B", agency_id=agency)
    other = await _org(connection, "Other")
    staff = await people.ensure_user(connection, "staff@agency.example")
    await people.add_member(connection, agency, staff, "admin")
    client_user = await people.ensure_user(connection, "owner@client-a.example")
    await people.add_member(connection, client_a, client_user, "owner")

    staff_sees = {a.org_id: a.role for a in await people.accessible(connection, staff)}
    assert staff_sees == {agency: "admin", client_a: "admin", client_b: "admin"}
    client_sees = {a.org_id: a.role for a in await people.accessible(connection, client_user)}
    assert client_sees == {client_a: "owner"}
    for org_id in (agency, client_b, other):
        assert await people.access_to(connection, client_user, org_id) is None
    assert await people.access_to(connection, staff, other) is None
    # A client's own membership outranks a lower agency role.
    await people.add_member(connection, client_a, staff, "owner")
    found = await people.access_to(connection, staff, client_a)
    assert found is not None and found.role == "owner"
    # The schema keeps an agency from being a client, and a client's agency an agency.
    with pytest.raises(asyncpg.CheckViolationError):
        await _org(connection, "Sub", agency_id=client_a)
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute("UPDATE organizations SET kind = 'business' WHERE id = $1",
                                 agency)
