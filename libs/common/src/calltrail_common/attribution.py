"""Which organization an event on the shared endpoint belongs to (contract section 5). Pure.

The endpoint an event came in on decides when it is an organization's own; on the shared
endpoint, which is the operator's, no text a tenant can write may move a call into another
organization:

1. `call.orgId`, when it is the Vapi org of a connected account, decides. Every other key the
   event offers must then agree with it: an organization id in the metadata, a registered
   `call.phoneNumberId`, a registered dialled number. One that names another organization is
   a disagreement: the event is kept aside with the reason, never routed.
2. When `call.orgId` is no connected account's, in this order: the metadata's organization
   id, then `call.phoneNumberId`, then the dialled number. A key that names no organization
   falls through to the next.

Numbers learnt from an account are keyed within its Vapi org: they count only for events
whose `call.orgId` is that org. Numbers registered by hand (`calltrail phone-number add`)
count for every event. One exception, on the safe side: a phone-number id registered to
another organization under *any* Vapi org disagrees with a connected account's org (a real
Vapi event never names another Vapi org's phone-number object), while a dialled number may
be imported into several Vapi orgs, so only its registrations that count disagree.

The processor (`call_processor.handlers`) and the hand-back of unassigned events
(`calltrail_common.handback`) both decide with `attribute`; what it needs from the
database is read in one query (`calltrail_common.phone_numbers.known_for`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DISAGREES_METADATA = ("disagrees: metadata names another organization than call.orgId's "
                      "account")
DISAGREES_PHONE_NUMBER_ID = ("disagrees: call.phoneNumberId is registered to another "
                             "organization than call.orgId's account")
DISAGREES_NUMBER = ("disagrees: the dialled number is registered to another organization "
                    "than call.orgId's account")
NO_MATCH = "no organization matches"


@dataclass(frozen=True, slots=True)
class Routing:
    """What an event offers to find its organization by."""

    metadata_org_ids: tuple[str, ...]  # in the order of contract section 5
    phone_number_id: str | None
    dialled_number: str | None  # E.164
    vapi_org_id: str | None  # call.orgId


@dataclass(frozen=True, slots=True)
class Registration:
    """A row of `phone_numbers`: its organization, and the Vapi org it was learnt from
    (None: registered by hand)."""

    org_id: uuid.UUID
    vapi_org_id: str | None


@dataclass(frozen=True, slots=True)
class Known:
    """What the database holds about the keys some events offer."""

    organizations: frozenset[uuid.UUID] = frozenset()
    accounts: Mapping[str, uuid.UUID] = field(default_factory=dict)  # connected Vapi org
    by_phone_number_id: Mapping[str, Sequence[Registration]] = field(default_factory=dict)
    by_number: Mapping[str, Sequence[Registration]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attribution:
    """An event's organization, or why it has none (then it is kept aside)."""

    org_id: uuid.UUID | None
    reason: str | None = None


def as_uuid(value: object) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def metadata_uuids(routing: Routing) -> list[uuid.UUID]:
    """The metadata's organization ids that are ids at all, in order."""
    return [u for i in routing.metadata_org_ids if (u := as_uuid(i)) is not None]


def _counts(registration: Registration, vapi_org_id: str | None) -> bool:
    """A registration counts for an event by hand, or when learnt from its call.orgId."""
    return registration.vapi_org_id is None or registration.vapi_org_id == vapi_org_id


def attribute(routing: Routing, known: Known) -> Attribution:
    """The organization of an event on the shared endpoint, or the reason it has none."""
    vapi_org_id = routing.vapi_org_id
    named = [u for u in metadata_uuids(routing) if u in known.organizations]
    by_id = known.by_phone_number_id.get(routing.phone_number_id or "", ())
    by_number = known.by_number.get(routing.dialled_number or "", ())
    account = known.accounts.get(vapi_org_id) if vapi_org_id is not None else None
    if account is not None:
        if any(org != account for org in named):
            return Attribution(None, DISAGREES_METADATA)
        if any(r.org_id != account for r in by_id):
            return Attribution(None, DISAGREES_PHONE_NUMBER_ID)
        if any(r.org_id != account and _counts(r, vapi_org_id) for r in by_number):
            return Attribution(None, DISAGREES_NUMBER)
        return Attribution(account)
    for org in named:
        return Attribution(org)
    for registrations in (by_id, by_number):
        # Learnt from the event's own Vapi org before by hand: the more specific first.
        for registration in sorted(registrations, key=_specific_first):
            if _counts(registration, vapi_org_id):
                return Attribution(registration.org_id)
    return Attribution(None, NO_MATCH)


def _specific_first(registration: Registration) -> tuple[bool, str]:
    return registration.vapi_org_id is None, str(registration.org_id)
