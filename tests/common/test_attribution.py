"""The attribution rule of the shared endpoint (contract section 5, issue 17), pure: every
case with plain asserts, and a property over any keys and any mappings."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from calltrail_common.attribution import (
    DISAGREES_METADATA,
    DISAGREES_NUMBER,
    DISAGREES_PHONE_NUMBER_ID,
    NO_MATCH,
    Attribution,
    Known,
    Registration,
    Routing,
    as_uuid,
    attribute,
    metadata_uuids,
)

A, B, C = (uuid.UUID(int=n) for n in (1, 2, 3))
BY_HAND = None


def routing(*, metadata: tuple[str, ...] = (), phone_id: str | None = None,
            number: str | None = None, vapi_org: str | None = None) -> Routing:
    return Routing(metadata, phone_id, number, vapi_org)


KNOWN = Known(
    organizations=frozenset({A, B, C}),
    accounts={"vapi-b": B},
    by_phone_number_id={"pn-a": [Registration(A, BY_HAND)],
                        "pn-b": [Registration(B, "vapi-b")],
                        "pn-a-learnt": [Registration(A, "vapi-a")]},
    by_number={"+1555000000a": [Registration(A, BY_HAND)],
               "+1555000000b": [Registration(B, "vapi-b")],
               "+1555000000l": [Registration(A, "vapi-a")]},
)


def test_a_connected_accounts_org_decides() -> None:
    assert attribute(routing(vapi_org="vapi-b"), KNOWN) == Attribution(B)


def test_keys_that_agree_with_the_account_are_fine() -> None:
    assert attribute(routing(vapi_org="vapi-b", metadata=(str(B),), phone_id="pn-b",
                             number="+1555000000b"), KNOWN) == Attribution(B)


def test_keys_that_name_nothing_are_no_disagreement() -> None:
    assert attribute(routing(vapi_org="vapi-b", metadata=(str(uuid.uuid4()), "acme"),
                             phone_id="pn-none", number="+15550009999"), KNOWN) \
        == Attribution(B)


def test_metadata_naming_another_organization_disagrees() -> None:
    for metadata in ((str(A),), (str(B), str(A)), (str(uuid.uuid4()), str(C))):
        assert attribute(routing(vapi_org="vapi-b", metadata=metadata), KNOWN) \
            == Attribution(None, DISAGREES_METADATA)


def test_another_organizations_phone_number_id_disagrees_by_hand_or_learnt_anywhere() -> None:
    for phone_id in ("pn-a", "pn-a-learnt"):
        assert attribute(routing(vapi_org="vapi-b", phone_id=phone_id), KNOWN) \
            == Attribution(None, DISAGREES_PHONE_NUMBER_ID)


def test_another_organizations_dialled_number_disagrees_only_where_it_counts() -> None:
    assert attribute(routing(vapi_org="vapi-b", number="+1555000000a"), KNOWN) \
        == Attribution(None, DISAGREES_NUMBER)
    # Learnt from another Vapi org: a number may be imported into several.
    assert attribute(routing(vapi_org="vapi-b", number="+1555000000l"), KNOWN) \
        == Attribution(B)


def test_the_first_disagreement_is_the_reason() -> None:
    assert attribute(routing(vapi_org="vapi-b", metadata=(str(A),), phone_id="pn-a",
                             number="+1555000000a"), KNOWN).reason == DISAGREES_METADATA
    assert attribute(routing(vapi_org="vapi-b", phone_id="pn-a", number="+1555000000a"),
                     KNOWN).reason == DISAGREES_PHONE_NUMBER_ID


def test_without_a_connected_account_metadata_then_phone_id_then_number() -> None:
    for vapi_org in (None, "vapi-nobody"):
        assert attribute(routing(metadata=(str(C),), phone_id="pn-a", number="+1555000000a",
                                 vapi_org=vapi_org), KNOWN) == Attribution(C)
        assert attribute(routing(metadata=("acme", str(uuid.uuid4())), phone_id="pn-a",
                                 number="+1555000000b", vapi_org=vapi_org), KNOWN) \
            == Attribution(A)
        assert attribute(routing(phone_id="pn-none", number="+1555000000a",
                                 vapi_org=vapi_org), KNOWN) == Attribution(A)
        assert attribute(routing(vapi_org=vapi_org), KNOWN) == Attribution(None, NO_MATCH)


def test_learnt_numbers_count_only_for_their_own_vapi_org() -> None:
    # vapi-a has no connected account (say it was disconnected): its learnt keys still route.
    assert attribute(routing(phone_id="pn-a-learnt", vapi_org="vapi-a"), KNOWN) \
        == Attribution(A)
    assert attribute(routing(number="+1555000000l", vapi_org="vapi-a"), KNOWN) \
        == Attribution(A)
    for vapi_org in (None, "vapi-other"):
        assert attribute(routing(phone_id="pn-a-learnt", number="+1555000000l",
                                 vapi_org=vapi_org), KNOWN) == Attribution(None, NO_MATCH)


def test_a_phone_number_id_in_two_vapi_orgs_goes_to_the_events_own_first() -> None:
    known = Known(by_phone_number_id={"pn": [Registration(A, BY_HAND),
                                             Registration(C, "vapi-c")]})
    assert attribute(routing(phone_id="pn", vapi_org="vapi-c"), known) == Attribution(C)
    assert attribute(routing(phone_id="pn", vapi_org="vapi-x"), known) == Attribution(A)


def test_a_dialled_number_learnt_in_the_accounts_own_vapi_org_for_another_org_disagrees(
        ) -> None:
    # Say vapi-b's account moved from A to B: the number A learnt there still counts for
    # vapi-b's events, so it names another organization.
    known = Known(accounts={"vapi-b": B}, by_number={"+15550001111": [Registration(A, "vapi-b")]})
    assert attribute(routing(vapi_org="vapi-b", number="+15550001111"), known) \
        == Attribution(None, DISAGREES_NUMBER)


def test_registrations_equally_specific_decide_the_same_whatever_their_order() -> None:
    # Rows come from the database in no set order: the answer must not depend on it.
    for registrations in ([Registration(C, BY_HAND), Registration(A, BY_HAND)],
                          [Registration(C, "vapi-x"), Registration(A, "vapi-x")]):
        for ordered in (registrations, registrations[::-1]):
            for known in (Known(by_phone_number_id={"pn": ordered}),
                          Known(by_number={"+15550001111": ordered})):
                assert attribute(routing(phone_id="pn", number="+15550001111",
                                         vapi_org="vapi-x"), known) == Attribution(A)


def test_ids() -> None:
    assert as_uuid(None) is None and as_uuid("acme") is None and as_uuid(str(A)) == A
    assert metadata_uuids(routing(metadata=("acme", str(B), str(A)))) == [B, A]


_orgs = st.sampled_from([A, B, C])
_vapi_orgs = st.sampled_from([None, "vapi-a", "vapi-b", "vapi-c"])
_registrations = st.lists(st.builds(Registration, _orgs, _vapi_orgs), max_size=3)


@given(metadata=st.lists(st.sampled_from([str(A), str(B), str(C), "acme"]), max_size=3),
       phone_id=st.sampled_from([None, "pn"]), number=st.sampled_from([None, "+15550000000"]),
       vapi_org=_vapi_orgs,
       accounts=st.dictionaries(st.sampled_from(["vapi-a", "vapi-b", "vapi-c"]), _orgs),
       by_id=_registrations, by_number=_registrations)
def test_a_connected_accounts_event_never_lands_in_another_organization(
        metadata: list[str], phone_id: str | None, number: str | None, vapi_org: str | None,
        accounts: dict[str, uuid.UUID], by_id: list[Registration],
        by_number: list[Registration]) -> None:
    known = Known(frozenset({A, B, C}), accounts, {"pn": by_id}, {"+15550000000": by_number})
    event = routing(metadata=tuple(metadata), phone_id=phone_id, number=number,
                    vapi_org=vapi_org)
    result = attribute(event, known)
    assert (result.org_id is None) == (result.reason is not None)
    account = accounts.get(vapi_org) if vapi_org is not None else None
    if account is not None:
        assert result.org_id in (account, None)
    elif result.org_id is not None:
        # Only something the event names, and that counts for it, gives it an organization.
        offered = {as_uuid(m) for m in metadata}
        offered |= {r.org_id for r in (by_id if phone_id else []) + (by_number if number else [])
                    if r.vapi_org_id in (None, vapi_org)}
        assert result.org_id in offered
