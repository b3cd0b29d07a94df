"""The role rule: what each role allows, who may grant which role, who may change whose
membership (an organization keeps an owner), and an agency member's role in its clients."""

from __future__ import annotations

import itertools

import pytest

from calltrail_common.access import (
    ROLES,
    Action,
    Role,
    effective_role,
    leaves_no_owner,
    may,
    may_grant,
    parse_role,
    why_not_change,
)

ALLOWED: dict[Role, set[Action]] = {
    "viewer": {Action.READ, Action.EXPORT},
    "admin": {Action.READ, Action.EXPORT, Action.SYNC, Action.SEE_SECRETS,
              Action.MANAGE_VAPI_KEY, Action.MANAGE_TOKENS, Action.MANAGE_PEOPLE,
              Action.READ_AUDIT, Action.MANAGE_OUTBOUND_WEBHOOKS,
              Action.SET_SUCCESS_MEASURE, Action.SET_TIME_ZONE, Action.WIRE_VAPI,
              Action.ERASE_PERSONAL_DATA},
    "owner": set(Action),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(Action))
def test_each_role_allows_exactly_its_actions(role: Role, action: Action) -> None:
    assert may(role, action) is (action in ALLOWED[role])


@pytest.mark.parametrize("action", list(Action))
def test_no_role_allows_nothing(action: Action) -> None:
    assert not may(None, action)


def test_viewers_never_see_secrets_and_only_owners_rotate_them() -> None:
    assert not may("viewer", Action.SEE_SECRETS)
    assert [r for r in ROLES if may(r, Action.MANAGE_OUTBOUND_WEBHOOKS)] == ["owner", "admin"]
    assert [r for r in ROLES if may(r, Action.MANAGE_SECRET)] == ["owner"]
    assert [r for r in ROLES if may(r, Action.MANAGE_CLIENTS)] == ["owner"]
    assert [r for r in ROLES if may(r, Action.ERASE_PERSONAL_DATA)] == ["owner", "admin"]


@pytest.mark.parametrize(("granter", "role", "allowed"), [
    ("owner", "owner", True), ("owner", "admin", True), ("owner", "viewer", True),
    ("admin", "owner", False), ("admin", "admin", True), ("admin", "viewer", True),
    ("viewer", "owner", False), ("viewer", "admin", False), ("viewer", "viewer", False),
    (None, "viewer", False),
])
def test_people_managers_grant_up_to_their_own_role(granter: Role | None, role: Role,
                                                    allowed: bool) -> None:
    assert may_grant(granter, role) is allowed


@pytest.mark.parametrize(("direct", "agency", "expected"), [
    (None, None, None), ("viewer", None, "viewer"), (None, "admin", "admin"),
    ("viewer", "owner", "owner"), ("owner", "viewer", "owner"), ("admin", "admin", "admin"),
    ("admin", "viewer", "admin"), ("viewer", "admin", "admin"),
])
def test_the_higher_of_own_and_agency_membership(direct: Role | None, agency: Role | None,
                                                 expected: Role | None) -> None:
    assert effective_role(direct, agency) == expected


def test_parse_role() -> None:
    assert [parse_role(r) for r in ROLES] == list(ROLES)
    for bad in ("", "Owner", "root", "admin "):
        with pytest.raises(ValueError, match="owner, admin, viewer"):
            parse_role(bad)


def test_owners_change_anyone_to_anything() -> None:
    for held, wanted in itertools.product(ROLES, (*ROLES, None)):
        assert why_not_change("owner", held, wanted) is None


def test_admins_act_up_to_admin() -> None:
    assert why_not_change("admin", "viewer", "admin") is None
    assert why_not_change("admin", "admin", "viewer") is None
    assert why_not_change("admin", "admin", None) is None
    assert why_not_change("admin", "viewer", "owner") == "an admin cannot give the role owner"
    assert why_not_change("admin", "owner", "viewer") == (
        "an admin cannot change an owner's membership")
    assert why_not_change("admin", "owner", None) is not None
    assert not may_grant("admin", "owner") and may_grant("admin", "admin")


def test_viewers_and_strangers_change_nobody() -> None:
    for granter, held, wanted in itertools.product(("viewer", None), ROLES, (*ROLES, None)):
        assert why_not_change(granter, held, wanted) == "your role does not manage people"


def test_the_last_owner_stays() -> None:
    assert leaves_no_owner("owner", None, 1)
    assert leaves_no_owner("owner", "admin", 1)
    assert not leaves_no_owner("owner", "owner", 1)
    assert not leaves_no_owner("owner", None, 2)
    assert not leaves_no_owner("admin", None, 1)
    assert not leaves_no_owner("viewer", None, 0)
