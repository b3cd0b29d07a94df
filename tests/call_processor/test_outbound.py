"""The outbound webhooks' pure rules (call_processor.outbound): which events a batch's
changes make, their ids, and what their data says."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace
from decimal import Decimal

import pytest

from call_processor.calls import CallState
from call_processor.changes import CallChange
from call_processor.outbound import (
    CALL_ENDED,
    CALL_UPDATED,
    DAY_CLOSE_GRACE,
    DAY_CLOSED,
    EVENT_TYPES,
    LEAD_CREATED,
    LEAD_UPDATED,
    NOBODY,
    DayFigures,
    RefreshedLead,
    Subscriptions,
    call_data,
    call_event_type,
    call_events,
    candidate_days,
    day_closed_event,
    day_end,
    days_to_close,
    instant,
    lead_data,
    lead_events,
)
from calltrail_common.time_zones import zone

ORG = uuid.UUID("11111111-1111-1111-1111-111111111111")
OTHER = uuid.UUID("22222222-2222-2222-2222-222222222222")
T0 = dt.datetime(2026, 11, 3, 15, 4, 5, tzinfo=dt.UTC)


def state(status: str | None = "in-progress", **values: object) -> CallState:
    base: dict[str, object] = {"direction": "inboundPhoneCall", "created_at": T0,
                               "customer_number": "+14155550123"}
    base.update(values)
    return CallState(call_id="call-1", status=status, values=base)


def every(org: uuid.UUID = ORG, markup: str = "0") -> Subscriptions:
    return Subscriptions(types={org: frozenset(EVENT_TYPES)}, markups={org: Decimal(markup)})


# --- which call events ---------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after", "expected"), [
    (None, state("ended"), CALL_ENDED),                       # arrives ended
    (state("in-progress"), state("ended"), CALL_ENDED),       # reaches ended
    (None, state("ringing"), None),                           # new, not ended: nothing yet
    (state("ringing"), state("in-progress"), CALL_UPDATED),   # stored, moves on
    (state("ended"), state("ended", summary="Booked."), CALL_UPDATED),  # the analysis, later
    (state("ended"), state("ended", cost=Decimal("0.2")), CALL_UPDATED),  # the cost arrives
    (state("ended"), state("ended"), None),                   # a duplicate
    (state("ringing"), state("ringing", transcript="AI: hi"), None),  # not in the data
    (state("ended", summary="a"), state("ended", summary="b"), CALL_UPDATED),
])
def test_the_event_a_call_change_makes(before, after, expected) -> None:
    assert call_event_type(before, after) == expected


def test_a_change_of_the_event_times_alone_is_no_update() -> None:
    before = replace(state("ringing"), last_event_ms=1, versions={"direction": (1, 1)})
    after = replace(state("ringing"), last_event_ms=9, versions={"direction": (1, 9)})
    assert call_event_type(before, after) is None


def test_call_events_only_for_the_types_an_organization_wants() -> None:
    changes = [CallChange(ORG, state("in-progress"), state("ended")),
               CallChange(ORG, replace(state("ringing"), call_id="c2"),
                          replace(state("in-progress"), call_id="c2")),
               CallChange(OTHER, None, replace(state("ended"), call_id="c3"))]
    only_ended = Subscriptions(types={ORG: frozenset({CALL_ENDED})})
    assert [(e.type, e.call_id) for e in call_events(changes, only_ended)] == [
        (CALL_ENDED, "call-1")]
    assert [(e.type, e.call_id) for e in call_events(changes, every())] == [
        (CALL_ENDED, "call-1"), (CALL_UPDATED, "c2")]
    assert call_events(changes, NOBODY) == []


def test_call_ended_has_one_id_per_call_and_updates_new_ones() -> None:
    ended = CallChange(ORG, None, state("ended"))
    first, again = call_events([ended], every())[0], call_events([ended], every())[0]
    assert first.id == again.id
    assert first.id == uuid.uuid5(ORG, "call.ended:call-1")
    other_org = call_events([replace(ended, org_id=OTHER)], every(OTHER))[0]
    assert other_org.id != first.id
    updated = CallChange(ORG, state("ringing"), state("in-progress"))
    ids = {call_events([updated], every())[0].id for _ in range(3)}
    assert len(ids) == 3


# --- the call's data -----------------------------------------------------------------------


def test_call_data_names_fields_as_the_api_does() -> None:
    after = CallState(call_id="call-1", status="ended", values={
        "direction": "outboundPhoneCall", "created_at": T0,
        "started_at": T0 + dt.timedelta(seconds=2),
        "ended_at": T0 + dt.timedelta(seconds=97, microseconds=500_000),
        "ended_reason": "customer-ended-call", "cost": Decimal("0.2134"),
        "customer_number": "+14155550123", "customer_name": "Ana Ruiz",
        "customer_email": "ana@example.com", "assistant_id": "asst-1",
        "phone_number_id": "pn-1", "summary": "Booked.", "transcript": "AI: hello",
        "structured_data": {"name": "Ana"}, "success_evaluation": "true",
        "metadata": {"crmId": 7}, "recording_url": "https://r/x.wav",
        "cost_breakdown": {"llm": 0.1},
        "structured_outputs": {"so-2": {"name": "Booked", "result": True},
                               "so-1": {"name": "Name", "result": "Ana"}},
        "scorecards": {"sc-1": {"name": "Quality", "score": 8, "scoreNormalized": 0.8,
                                "metricPoints": {"greeting": 2}}}})
    assert call_data(ORG, after) == {
        "id": "call-1", "orgId": str(ORG), "type": "outboundPhoneCall",
        "direction": "outbound", "status": "ended", "endedReason": "customer-ended-call",
        "createdAt": "2026-11-03T15:04:05Z", "startedAt": "2026-11-03T15:04:07Z",
        "endedAt": "2026-11-03T15:05:42.500000Z", "durationSeconds": 95.5, "cost": 0.2134,
        "customerNumber": "+14155550123", "customerName": "Ana Ruiz",
        "customerEmail": "ana@example.com", "assistantId": "asst-1", "phoneNumberId": "pn-1",
        "leadId": None, "summary": "Booked.",
        "analysis": {"structuredData": {"name": "Ana"}, "successEvaluation": "true"},
        "structuredOutputs": [{"id": "so-2", "name": "Booked", "result": True},
                              {"id": "so-1", "name": "Name", "result": "Ana"}],
        "scorecards": [{"id": "sc-1", "name": "Quality", "score": 8.0,
                        "scoreNormalized": 0.8, "metricPoints": {"greeting": 2.0}}],
        "metadata": {"crmId": 7}}


def test_call_data_of_an_unknown_type_and_absent_values() -> None:
    data = call_data(ORG, CallState(call_id="c", values={"direction": "vapi.websocketCall"}))
    assert (data["type"], data["direction"]) == ("vapi.websocketCall", "vapi.websocketCall")
    assert data["status"] is data["cost"] is data["durationSeconds"] is data["createdAt"] \
        is None
    assert call_data(ORG, CallState(call_id="c"))["direction"] is None


def test_a_clients_call_costs_what_the_client_pays() -> None:
    event = call_events([CallChange(ORG, None, state("ended", cost=Decimal("0.2134")))],
                        every(markup="25"))[0]
    assert event.data["cost"] == 0.26675
    assert call_data(ORG, state(cost=None), Decimal(25))["cost"] is None


def test_instants_are_utc_with_a_z() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    assert instant(dt.datetime(2026, 1, 1, 1, 0, tzinfo=paris)) == "2026-01-01T00:00:00Z"
    assert instant(None) is None


# --- leads ---------------------------------------------------------------------------------


def lead(created: bool = False, name: str | None = None, email: str | None = None,
         old_name: str | None = None, old_email: str | None = None,
         org: uuid.UUID = ORG) -> RefreshedLead:
    return RefreshedLead(
        id=uuid.UUID("33333333-3333-3333-3333-333333333333"), org_id=org,
        phone_number="+14155550123", name=name, email=email, first_call_at=T0,
        last_call_at=T0 + dt.timedelta(days=1), call_count=2, created_at=T0,
        created=created, old_name=old_name, old_email=old_email)


@pytest.mark.parametrize(("refreshed", "expected"), [
    (lead(created=True), LEAD_CREATED),
    (lead(created=True, name="Ana"), LEAD_CREATED),  # created named: no update besides
    (lead(name="Ana"), LEAD_UPDATED),
    (lead(name="Ana", old_name="Ann"), LEAD_UPDATED),
    (lead(email="a@x.io"), LEAD_UPDATED),
    (lead(name=None, old_name="Ana"), LEAD_UPDATED),
    (lead(name="Ana", old_name="Ana", email="a@x.io", old_email="a@x.io"), None),
    (lead(), None),  # its counts changed only
])
def test_the_event_a_refreshed_lead_makes(refreshed, expected) -> None:
    assert [e.type for e in lead_events([refreshed], every())] == (
        [expected] if expected else [])


def test_lead_events_only_where_wanted_and_created_once_by_id() -> None:
    created = lead(created=True)
    assert lead_events([created], Subscriptions(types={ORG: frozenset({LEAD_UPDATED})})) == []
    assert lead_events([lead(created=True, org=OTHER)], every()) == []
    first, again = lead_events([created], every())[0], lead_events([created], every())[0]
    assert first.id == again.id == uuid.uuid5(ORG, f"lead.created:{created.id}")
    assert first.call_id is None
    updated = lead(name="Ana")
    assert lead_events([updated], every())[0].id != lead_events([updated], every())[0].id


def test_lead_data_is_the_api_lead() -> None:
    assert lead_data(lead(name="Ana", email="a@x.io")) == {
        "id": "33333333-3333-3333-3333-333333333333", "orgId": str(ORG),
        "phoneNumber": "+14155550123", "name": "Ana", "email": "a@x.io",
        "firstCallAt": "2026-11-03T15:04:05Z", "lastCallAt": "2026-11-04T15:04:05Z",
        "callCount": 2, "createdAt": "2026-11-03T15:04:05Z"}


def test_subscriptions_name_the_organizations_that_want_a_type() -> None:
    subscriptions = Subscriptions(types={ORG: frozenset({CALL_ENDED}),
                                         OTHER: frozenset({LEAD_UPDATED, DAY_CLOSED})})
    assert subscriptions.wanting(LEAD_CREATED, LEAD_UPDATED) == [OTHER]
    assert subscriptions.wanting(CALL_ENDED, DAY_CLOSED) == sorted([ORG, OTHER])
    assert subscriptions.markup(ORG) == 0
    assert NOBODY.wanting(*EVENT_TYPES) == []


# --- closed days ---------------------------------------------------------------------------

MIDNIGHT = dt.datetime(2026, 11, 5, tzinfo=dt.UTC)  # Thursday 00:00: Wednesday just ended
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def test_a_day_closes_after_its_grace() -> None:
    assert days_to_close(LONG_AGO, MIDNIGHT + DAY_CLOSE_GRACE - dt.timedelta(seconds=1)) == [
        dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
    assert days_to_close(LONG_AGO, MIDNIGHT + DAY_CLOSE_GRACE) == [
        dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 4)]


def test_only_the_last_days_are_closed_however_old_the_endpoint() -> None:
    assert days_to_close(LONG_AGO, MIDNIGHT + dt.timedelta(hours=23)) == [
        dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 4)]


def test_only_days_that_ended_after_the_endpoint_was_created() -> None:
    now = MIDNIGHT + dt.timedelta(hours=1)
    created_wednesday_noon = MIDNIGHT - dt.timedelta(hours=12)
    assert days_to_close(created_wednesday_noon, now) == [dt.date(2026, 11, 4)]
    assert days_to_close(MIDNIGHT, now) == []  # created as Wednesday ended
    assert days_to_close(now, now) == []


def test_a_closed_day_event() -> None:
    figures = DayFigures(calls=3, inbound=2, outbound=1, web=0, new_leads=1,
                         duration_seconds=Decimal("95.5"), cost=Decimal("0.4"))
    event = day_closed_event(ORG, dt.date(2026, 11, 4), figures, Decimal(10))
    assert event.id == uuid.uuid5(ORG, "usage.day_closed:2026-11-04")
    assert (event.type, event.org_id, event.occurred_at, event.call_id) == (
        DAY_CLOSED, ORG, MIDNIGHT, None)
    assert event.data == {"orgId": str(ORG), "date": "2026-11-04", "calls": 3, "inbound": 2,
                          "outbound": 1, "web": 0, "newLeads": 1, "minutes": 1.591667,
                          "cost": 0.44}


def test_candidate_days_are_each_organizations_with_their_ids() -> None:
    now = MIDNIGHT + dt.timedelta(hours=1)
    days = candidate_days({ORG: MIDNIGHT - dt.timedelta(hours=1), OTHER: MIDNIGHT}, now)
    assert days == [(uuid.uuid5(ORG, "usage.day_closed:2026-11-04"), ORG,
                     dt.date(2026, 11, 4))]


# --- edges the mutation run found untested -------------------------------------------------


def test_a_change_nobody_wants_does_not_stop_the_ones_after_it() -> None:
    changes = [CallChange(OTHER, None, replace(state("ended"), call_id="c0")),
               CallChange(ORG, state("ringing"), state("ringing")),  # no event
               CallChange(ORG, None, state("ended"))]
    assert [(e.org_id, e.call_id) for e in call_events(changes, every())] == [
        (ORG, "call-1")]


def test_instants_are_utc_whatever_the_local_zone(local_time_not_utc: None) -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    assert instant(dt.datetime(2026, 7, 1, 12, 0, tzinfo=paris)) == "2026-07-01T11:00:00Z"


def test_a_day_that_ended_exactly_at_the_lookback_is_not_closed() -> None:
    now = MIDNIGHT + dt.timedelta(days=1)  # Monday the 2nd ended exactly three days before
    assert days_to_close(LONG_AGO, now) == [dt.date(2026, 11, 3), dt.date(2026, 11, 4)]


# --- an organization's own days (decision 45), its leads and deleted calls ------------------

LOS_ANGELES = zone("America/Los_Angeles")


def test_a_day_ends_at_the_organizations_midnight_in_utc() -> None:
    assert day_end(dt.date(2026, 11, 4), LOS_ANGELES) == dt.datetime(
        2026, 11, 5, 8, tzinfo=dt.UTC)  # PST, UTC-8
    assert day_end(dt.date(2026, 3, 7), LOS_ANGELES) == dt.datetime(
        2026, 3, 8, 8, tzinfo=dt.UTC)  # the 8th begins before the clocks go forward
    assert day_end(dt.date(2026, 11, 4)) == MIDNIGHT


def test_days_close_by_the_organizations_zone(local_time_not_utc: None) -> None:
    # 07:00 UTC on Thursday the 5th is still Wednesday the 4th in Los Angeles (23:00).
    now = MIDNIGHT + dt.timedelta(hours=7)
    assert days_to_close(LONG_AGO, now, LOS_ANGELES)[-1] == dt.date(2026, 11, 3)
    assert days_to_close(LONG_AGO, now + dt.timedelta(hours=2), LOS_ANGELES)[-1] == \
        dt.date(2026, 11, 4)
    # Only days that ended (in Los Angeles) after the endpoint was created, within 3 days.
    assert days_to_close(dt.datetime(2026, 11, 4, 8, 30, tzinfo=dt.UTC),
                         now + dt.timedelta(hours=2), LOS_ANGELES) == [dt.date(2026, 11, 4)]
    assert days_to_close(LONG_AGO, dt.datetime(2026, 11, 6, 8, tzinfo=dt.UTC) + DAY_CLOSE_GRACE,
                         LOS_ANGELES) == [dt.date(2026, 11, 3), dt.date(2026, 11, 4),
                                          dt.date(2026, 11, 5)]
    # Tuesday the 3rd ended at 08:00 UTC in Los Angeles, after an endpoint made at 06:00.
    assert days_to_close(dt.datetime(2026, 11, 4, 6, tzinfo=dt.UTC),
                         now + dt.timedelta(hours=2), LOS_ANGELES) == [dt.date(2026, 11, 3),
                                                                        dt.date(2026, 11, 4)]
    event = day_closed_event(ORG, dt.date(2026, 11, 4), DayFigures(), where=LOS_ANGELES)
    assert event.occurred_at == dt.datetime(2026, 11, 5, 8, tzinfo=dt.UTC)


def test_candidate_days_follow_each_organizations_zone() -> None:
    now = MIDNIGHT + dt.timedelta(hours=7, minutes=30)  # Wednesday ended in UTC only
    days = candidate_days({ORG: MIDNIGHT - dt.timedelta(hours=12),
                           OTHER: MIDNIGHT - dt.timedelta(hours=12)}, now,
                          {OTHER: LOS_ANGELES})
    assert [(org, day) for _, org, day in days] == [(ORG, dt.date(2026, 11, 4))]
    later = candidate_days({OTHER: MIDNIGHT - dt.timedelta(hours=12)},
                           now + dt.timedelta(hours=1), {OTHER: LOS_ANGELES})
    assert [(org, day) for _, org, day in later] == [(OTHER, dt.date(2026, 11, 4))]


def test_lead_events_carry_their_organization_and_data_and_skip_only_the_unwanted() -> None:
    unwanted, wanted = lead(created=True, org=OTHER), lead(created=True)
    [event] = lead_events([unwanted, lead(), wanted], every())  # the middle one: no change
    assert (event.org_id, event.type) == (ORG, LEAD_CREATED)
    assert event.data == lead_data(wanted)


def test_a_deleted_call_makes_no_event_and_a_calls_data_names_its_organization() -> None:
    deleted = replace(state(None), deleted=True)
    assert call_events([CallChange(ORG, state("in-progress"), deleted)], every()) == []
    [ended] = call_events([CallChange(ORG, state("in-progress"), state("ended"))], every())
    assert ended.data["orgId"] == str(ORG)
