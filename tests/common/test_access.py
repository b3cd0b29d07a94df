"""Who may change whose membership, and that an organization keeps an owner."""

from __future__ import annotations

import itertools

from calltrail_common.access import ROLES, leaves_no_owner, may_grant, why_not_change


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
