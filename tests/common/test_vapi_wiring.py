"""The pure rules of Vapi wiring (calltrail_common.vapi_wiring): where a target sends, which
needed messages it leaves out, and the PATCH bodies that wire it and put it back."""

from __future__ import annotations

import hashlib
import hmac

from calltrail_common.vapi_wiring import (
    CREDENTIAL_NAME,
    DEFAULT_SERVER_MESSAGES,
    NEEDED_MESSAGES,
    Target,
    assess,
    credential_body,
    same_url,
    target_of,
    unwire_body,
    wire_body,
    wired_messages,
)
from ingest.auth import verify_credentials

HERE = "https://ingest.example.com/webhooks/vapi/ep_abc"


def assistant(**fields: object) -> Target:
    target = target_of("assistant", {"id": "a1", "name": "Receptionist", **fields})
    assert target is not None
    return target


def test_the_needed_messages_are_what_the_processor_builds_calls_from() -> None:
    from call_processor.events import CALL_EVENT_TYPES
    from calltrail_common.snapshots import CALL_SNAPSHOT

    assert set(NEEDED_MESSAGES) == CALL_EVENT_TYPES - {CALL_SNAPSHOT}


def test_an_assistant_without_server_messages_sends_vapis_defaults() -> None:
    target = assistant()
    assert target.server_messages is None
    state = assess(target, HERE, None, set())
    # The defaults hold the two that build calls, not the deletions (decision 44).
    assert state.points == "nowhere" and state.missing_messages == ("call.deleted",)
    assert wired_messages(target) == [*DEFAULT_SERVER_MESSAGES, "call.deleted"]


def test_missing_messages_are_added_and_the_business_ones_kept() -> None:
    target = assistant(serverMessages=["transcript", "status-update", "tool-calls"])
    assert assess(target, HERE, None, set()).missing_messages == ("end-of-call-report",
                                                                  "call.deleted")
    assert wired_messages(target) == ["transcript", "status-update", "tool-calls",
                                      "end-of-call-report", "call.deleted"]
    assert assess(assistant(serverMessages=[]), HERE, None, set()).missing_messages \
        == NEEDED_MESSAGES


def test_where_a_target_points_and_with_which_credential() -> None:
    elsewhere = assistant(server={"url": "https://crm.example.com/vapi", "credentialId": "c9"})
    state = assess(elsewhere, HERE, "c1", set())
    assert (state.points, state.credential_id, state.credential_current) == (
        "elsewhere", "c9", False)
    assert not state.complete
    here = assistant(server={"url": HERE + "/", "credentialId": "c1"},
                     serverMessages=list(NEEDED_MESSAGES))
    state = assess(here, HERE, "c1", {("assistant", "a1")})
    assert state.points == "here" and state.credential_current and state.wired_by_calltrail
    assert state.complete
    # The right URL with an old credential (the secret was rotated since) is not complete.
    assert not assess(here, HERE, "c2", set()).complete
    # Nor is it when it leaves a needed message out.
    assert not assess(assistant(server={"url": HERE, "credentialId": "c1"},
                                serverMessages=["status-update"]), HERE, "c1", set()).complete


def test_wire_body_keeps_delivery_choices_and_drops_headers() -> None:
    target = assistant(server={"url": "https://old.example.com", "timeoutSeconds": 10,
                               "headers": {"Authorization": "Bearer other"},
                               "credentialId": "old"},
                       serverMessages=["hang"])
    assert wire_body(target, HERE, "c1") == {
        "server": {"timeoutSeconds": 10, "url": HERE, "credentialId": "c1"},
        "serverMessages": ["hang", "status-update", "end-of-call-report", "call.deleted"]}


def test_a_phone_number_is_patched_with_its_provider_and_no_messages() -> None:
    number = target_of("phone-number", {"id": "p1", "provider": "twilio",
                                        "number": "+16505550100", "serverMessages": ["x"]})
    assert number is not None and number.label == "+16505550100"
    assert number.server_messages is None
    assert assess(number, HERE, None, set()).missing_messages == ()
    assert wire_body(number, HERE, "c1") == {
        "provider": "twilio", "server": {"url": HERE, "credentialId": "c1"}}
    assert unwire_body("phone-number", "twilio", None, None) == {
        "provider": "twilio", "server": None}


def test_unwire_puts_back_the_previous_fields_or_clears_them() -> None:
    previous = {"url": "https://old.example.com", "credentialId": "old"}
    assert unwire_body("assistant", None, previous, ["hang"]) == {
        "server": previous, "serverMessages": ["hang"]}
    assert unwire_body("assistant", None, None, None) == {
        "server": None, "serverMessages": None}


def test_an_item_without_an_id_is_no_target() -> None:
    assert target_of("assistant", {"name": "x"}) is None
    assert target_of("phone-number", {"id": ""}) is None


def test_the_credential_signs_as_ingest_verifies() -> None:
    """A request signed the way the credential tells Vapi to sign is accepted by ingest."""
    secret = "whsec-test-secret"
    plan = credential_body(secret)["authenticationPlan"]
    assert plan["type"] == "hmac" and plan["includeTimestamp"] is True
    body, timestamp = b'{"message":{"type":"status-update"}}', "1700000000"
    signed = plan["payloadFormat"].replace("{timestamp}", timestamp).encode().replace(
        b"{body}", body)
    signature = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    headers = {plan["signatureHeader"]: signature, plan["timestampHeader"]: timestamp}
    verify_credentials(headers, body, [secret.encode()], now=1700000001,
                       require_timestamp=True)


def test_a_target_keeps_what_vapi_lists_and_drops_what_is_not_its_shape() -> None:
    sip = target_of("phone-number", {"id": "p2", "name": "Front desk",
                                      "sipUri": "sip:desk@example.sip.vapi.ai"})
    assert sip is not None
    assert (sip.name, sip.label, sip.provider, sip.server) == (
        "Front desk", "sip:desk@example.sip.vapi.ai", None, None)
    odd = target_of("phone-number", {"id": "p3", "name": 7, "number": 16505550100,
                                      "provider": ["twilio"], "server": "https://x"})
    assert odd is not None
    assert (odd.name, odd.label, odd.provider, odd.server) == (None, None, None, None)
    assert assistant().name == "Receptionist"
    assert assistant(serverMessages="status-update").server_messages is None
    assert assistant(serverMessages=["status-update", 3]).server_messages == ("status-update",)


def test_the_same_url_ignores_surrounding_space_and_a_trailing_slash_only() -> None:
    assert same_url(f"  {HERE}/ ", HERE) and same_url(HERE, HERE + "/")
    assert not same_url(None, HERE)
    assert not same_url(HERE + "X", HERE) and not same_url(HERE, HERE + "X")
    assert not same_url(HERE + "/more", HERE)


def test_a_server_of_another_shape_points_nowhere_without_a_credential() -> None:
    state = assess(assistant(server={"url": 5, "credentialId": 7}), HERE, "7", set())
    assert (state.points, state.server_url, state.credential_id) == ("nowhere", None, None)
    assert not state.credential_current
    blank = assess(assistant(server={"url": HERE, "credentialId": ""}), HERE, "", set())
    assert (blank.credential_id, blank.credential_current) == (None, False)
    target = assistant(server={"url": "https://crm.example.com/vapi"})
    state = assess(target, HERE, None, {("phone-number", "a1")})
    assert state.target is target and state.server_url == "https://crm.example.com/vapi"
    assert not state.wired_by_calltrail  # wired as another kind


def test_a_number_without_a_provider_is_patched_without_one() -> None:
    number = target_of("phone-number", {"id": "p1", "number": "+16505550100"})
    assert number is not None
    assert wire_body(number, HERE, "c1") == {"server": {"url": HERE, "credentialId": "c1"}}
    assert unwire_body("phone-number", None, {"url": "https://old"}, None) == {
        "server": {"url": "https://old"}}


def test_the_credential_is_the_webhook_hmac_plan_vapi_documents() -> None:
    assert credential_body("s3cret") == {
        "provider": "webhook", "name": CREDENTIAL_NAME, "authenticationPlan": {
            "type": "hmac", "secretKey": "s3cret", "algorithm": "sha256",
            "signatureHeader": "x-signature", "timestampHeader": "x-timestamp",
            "includeTimestamp": True, "payloadFormat": "{timestamp}.{body}",
            "signatureEncoding": "hex"}}
