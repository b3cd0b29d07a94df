"""The fake Vapi API (calltrail_testkit.fake_vapi), served for real: what the client tests,
the demo, the benchmarks and the chaos suite rely on."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from calltrail_testkit.fake_vapi import (
    DEMO_API_KEY,
    UNAUTHORIZED_BODY,
    FakeAccount,
    FakeVapi,
    Usage,
    make_call,
    seed_demo,
    serve,
)
from tests.support.samples import assert_artifact_shaped

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeVapi, str]]:
    """One server per module; each test has its own accounts (its own keys)."""
    fake = FakeVapi(seed=1)
    with serve(fake) as base_url:
        yield fake, base_url


@pytest.fixture
def key() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def fake(served: tuple[FakeVapi, str], key: str) -> Iterator[FakeVapi]:
    fake = served[0]
    account = fake.add_account(key, seed=1, calls=0, phone_numbers=2, assistants=2)
    account.add_calls(300, rng=random.Random(2), start=NOW - timedelta(days=3), end=NOW)
    yield fake
    fake.latency = 0.0


@pytest.fixture
def http(served: tuple[FakeVapi, str], key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1], headers={"Authorization": f"Bearer {key}"},
                      timeout=10) as client:
        yield client


def ids(rows: list[dict]) -> set[str]:
    return {row["id"] for row in rows}


def test_call_time_filters_select_exactly_the_matching_calls(fake: FakeVapi, key: str,
                                                              http: httpx.Client) -> None:
    calls = list(fake.account(key).calls.values())
    pivot = sorted(calls, key=lambda c: c["createdAt"])[150]
    at = datetime.fromisoformat(pivot["createdAt"])
    start = at - timedelta(hours=12)

    def created(c: dict) -> datetime:
        return datetime.fromisoformat(c["createdAt"])

    cases = {
        "createdAtGe": ({c["id"] for c in calls if start <= created(c) < at},
                        {"createdAtGe": iso(start), "createdAtLt": iso(at)}),
        "createdAtLe": ({c["id"] for c in calls if start <= created(c) <= at},
                        {"createdAtGe": iso(start), "createdAtLe": iso(at)}),
        "createdAtGt": ({c["id"] for c in calls if start < created(c) <= at},
                        {"createdAtGt": iso(start), "createdAtLe": iso(at)}),
    }
    for name, (expected, query) in cases.items():
        rows = http.get("/call", params={**query, "limit": 1000}).json()
        assert ids(rows) == expected, name
    assert pivot["id"] in cases["createdAtLe"][0] - cases["createdAtGe"][0]

    updated = pivot["updatedAt"]
    rows = http.get("/call", params={"updatedAtGe": updated, "updatedAtLe": updated}).json()
    assert pivot["id"] in ids(rows)


def test_call_equality_filters(fake: FakeVapi, key: str, http: httpx.Client) -> None:
    account = fake.account(key)
    calls = list(account.calls.values())
    one = calls[7]
    assert http.get("/call", params={"id": one["id"]}).json() == [one]
    for name in ("assistantId", "phoneNumberId"):
        value = one[name]
        rows = http.get("/call", params={name: value, "limit": 1000}).json()
        assert ids(rows) == {c["id"] for c in calls if c[name] == value}
        assert 0 < len(rows) < len(calls)


def test_call_list_is_shuffled_and_truncated_to_an_arbitrary_subset(
        fake: FakeVapi, key: str, http: httpx.Client) -> None:
    everything = ids(list(fake.account(key).calls.values()))
    assert len(http.get("/call").json()) == 100  # the default limit
    answers = [http.get("/call", params={"limit": 250}).json() for _ in range(4)]
    assert all(len(rows) == 250 and ids(rows) <= everything for rows in answers)
    assert len({frozenset(ids(rows)) for rows in answers}) > 1  # not always the same 250
    full = [http.get("/call", params={"limit": 1000}).json() for _ in range(3)]
    assert all(ids(rows) == everything for rows in full)
    assert len({tuple(row["id"] for row in rows) for rows in full}) > 1  # order varies


@pytest.mark.parametrize("params", [
    {"limit": 1001}, {"limit": -1}, {"limit": "ten"}, {"createdAtGe": "yesterday"},
])
def test_invalid_query_is_a_validation_error(fake: FakeVapi, http: httpx.Client,
                                             params: dict) -> None:
    response = http.get("/call", params=params)
    assert response.status_code == 400
    assert response.json()["statusCode"] == 400


def test_one_call_by_id_only_in_its_own_account(fake: FakeVapi, key: str,
                                                http: httpx.Client) -> None:
    other = fake.add_account(key + "-other", seed=3, calls=1)
    mine = next(iter(fake.account(key).calls.values()))
    assert http.get(f"/call/{mine['id']}").json() == mine
    foreign = next(iter(other.calls))
    assert http.get(f"/call/{foreign}").status_code == 404


def test_assistants_and_phone_numbers(fake: FakeVapi, key: str, http: httpx.Client) -> None:
    account = fake.account(key)
    assert http.get("/assistant", params={"limit": 1}).json() == account.assistants[:1]
    phones = http.get("/phone-number", params={"limit": 1000}).json()
    assert phones == account.phone_numbers
    assert all(p["orgId"] == account.org_id and p["number"].startswith("+1") for p in phones)


def test_unknown_or_refused_keys_get_vapis_401(fake: FakeVapi, key: str,
                                               http: httpx.Client) -> None:
    unknown_before = fake.unknown_key_requests
    for headers in ({"Authorization": "Bearer nope"}, {"Authorization": ""}):
        response = http.get("/assistant", headers=headers)
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)
    assert fake.unknown_key_requests == unknown_before + 2
    fake.account(key).unauthorized = True
    response = http.get("/call")
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)


def test_unknown_route_is_404(http: httpx.Client) -> None:
    assert http.get("/squad").status_code == 404


def test_injected_faults_and_request_counters(fake: FakeVapi, key: str,
                                              http: httpx.Client) -> None:
    account = fake.account(key)
    account.rate_limit_next, account.retry_after, account.fail_next = 2, 0.2, 1
    first, second = http.get("/assistant"), http.get("/assistant")
    assert [first.status_code, second.status_code] == [429, 429]
    assert first.headers["retry-after"] == "0.2"
    assert http.get("/assistant").status_code == 503
    assert http.get("/assistant", params={"limit": 1}).status_code == 200
    account.rate_limit_next, account.retry_after = 1, None
    assert "retry-after" not in http.get("/call").headers
    assert account.requests == 5
    assert account.request_log[3] == ("GET", "/assistant", {"limit": "1"})


def test_an_outage_answers_its_5xx_to_every_request_until_cleared(
        fake: FakeVapi, key: str, http: httpx.Client) -> None:
    account = fake.account(key)
    account.fail_status = 502
    assert [http.get(path).status_code for path in ("/assistant", "/call", "/phone-number",
                                                    "/assistant")] == [502] * 4
    assert http.get("/call").json()["error"] == "Bad Gateway"
    faults = http.post(f"/_fake/accounts/{key}/faults", json={"fail_status": 0}).json()
    assert faults["fail_status"] == 0
    assert http.get("/assistant").status_code == 200
    assert http.post(f"/_fake/accounts/{key}/faults",
                     json={"fail_status": 404}).status_code == 400
    assert http.post(f"/_fake/accounts/{key}/faults",
                     json={"fail_status": 500}).json()["fail_status"] == 500
    assert http.get("/assistant").status_code == 500


def test_latency_is_added_to_each_request(fake: FakeVapi, key: str, http: httpx.Client) -> None:
    fake.latency, fake.account(key).latency = 0.1, 0.1
    response = http.get("/assistant")
    assert response.status_code == 200
    assert response.elapsed >= timedelta(seconds=0.2)


def test_admin_routes_add_accounts_and_calls_inject_faults_and_report(
        fake: FakeVapi, key: str, http: httpx.Client) -> None:
    admin = key + "-admin"
    created = http.post("/_fake/accounts", json={"api_key": admin, "calls": 40,
                                                 "days": 2, "seed": 9}).json()
    assert created["calls"] == 40 and len(created["phone_numbers"]) == 3
    assert http.post("/_fake/accounts", json={"api_key": admin}).status_code == 409
    assert http.post("/_fake/accounts", json={"calls": "many"}).status_code == 400
    as_new = {"Authorization": f"Bearer {admin}"}
    assert len(http.get("/call", params={"limit": 1000}, headers=as_new).json()) == 40

    added = http.post(f"/_fake/accounts/{admin}/calls", json={"calls": 5, "seed": 1}).json()
    assert len(added["ids"]) == 5
    call_id = added["ids"][0]
    updated = http.post(f"/_fake/accounts/{admin}/calls/{call_id}",
                        json={"status": "ended", "cost": 1.5}).json()
    assert updated["cost"] == 1.5

    faults = http.post(f"/_fake/accounts/{admin}/faults",
                       json={"fail_next": 1, "retry_after": 3}).json()
    assert faults["fail_next"] == 1 and faults["retry_after"] == 3.0
    assert http.get("/assistant", headers=as_new).status_code == 503
    assert http.get(f"/_fake/accounts/{admin}/stats").json() == {"requests": 2, "calls": 45}

    usage = http.get(f"/_fake/accounts/{admin}/usage").json()
    account = fake.account(admin)
    assert usage == {day.isoformat(): {"calls": u.calls, "minutes": str(u.minutes),
                                       "cost": str(u.cost)}
                     for day, u in account.daily_usage().items()}
    assert sum(day["calls"] for day in usage.values()) == 45
    assert http.post("/_fake/faults", json={"latency": 0.01}).json() == {"latency": 0.01}
    assert fake.latency == 0.01
    assert http.get("/_fake/accounts/missing/stats").status_code == 404


def test_update_call_bumps_updated_at(fake: FakeVapi, key: str) -> None:
    account = fake.account(key)
    call_id, call = next(iter(account.calls.items()))
    updated = account.update_call(call_id, status="ended")
    assert updated["updatedAt"] > call["updatedAt"]
    assert account.calls[call_id] is updated


def test_generated_calls_are_shaped_like_vapis() -> None:
    rng = random.Random(5)
    for _ in range(200):
        call = make_call(rng, org_id="org", created_at=NOW, phone_number_id="p",
                         assistant_id="a", customer_number="+14155550123")
        assert call["createdAt"] == "2026-11-03T12:00:00.000Z"
        assert call["createdAt"] < call["startedAt"] < call["endedAt"] < call["updatedAt"]
        assert 0.02 <= call["cost"] <= 5
        assert call["costBreakdown"]["total"] == call["cost"]
        assert 1000 <= len(call["artifact"]["transcript"].encode()) <= 5500
        assert call["artifact"]["transcript"].startswith("AI: ")
        assert call["analysis"]["successEvaluation"] in ("true", "false")
    pending = make_call(rng, org_id="org", created_at=NOW, phone_number_id=None,
                        assistant_id=None, customer_number="+1", ended=False)
    assert "endedAt" not in pending and pending["status"] != "ended"


def test_daily_usage_is_the_sum_over_the_raw_calls() -> None:
    account = FakeAccount(api_key="k", org_id="o")
    rng = random.Random(11)
    account.add_calls(120, rng=rng, start=NOW - timedelta(days=2), end=NOW)
    account.add_calls(6, rng=rng, start=NOW - timedelta(hours=1), end=NOW, ended=False)
    # Computed independently: parse the raw timestamps with strptime, per-call minutes.
    fmt = "%Y-%m-%dT%H:%M:%S.%f%z"
    expected: dict[date, list] = {}
    for call in account.calls.values():
        day = datetime.strptime(call["createdAt"], fmt).date()
        totals = expected.setdefault(day, [0, Decimal(0), Decimal(0)])
        totals[0] += 1
        if "endedAt" in call:
            took = (datetime.strptime(call["endedAt"], fmt)
                    - datetime.strptime(call["startedAt"], fmt))
            totals[1] += Decimal(took.days * 86_400_000_000 + took.seconds * 1_000_000
                                 + took.microseconds)
        totals[2] += Decimal(str(call.get("cost", 0)))
    truth = account.daily_usage()
    assert truth == {day: Usage(calls, micros / 60_000_000, cost)
                     for day, (calls, micros, cost) in expected.items()}
    assert sorted(truth) == [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
    assert sum(u.calls for u in truth.values()) == 126


def test_demo_account() -> None:
    fake = FakeVapi()
    account = seed_demo(fake)
    assert fake.account(DEMO_API_KEY) is account
    assert (len(account.phone_numbers), len(account.assistants)) == (3, 2)
    assert 190 <= len(account.calls) <= 210
    oldest = min(datetime.fromisoformat(c["createdAt"]) for c in account.calls.values())
    assert oldest >= datetime.now(UTC) - timedelta(days=14, minutes=1)


def test_generated_calls_parse_with_the_official_sdk() -> None:
    from vapi.types import Call  # slow (~25 s): the one test that imports the SDK

    rng = random.Random(3)
    account = FakeAccount(api_key="k", org_id="7d3e2a10-6c1b-4f0e-9a55-2f4be1c0a001")
    account.add_calls(40, rng=rng, start=NOW - timedelta(days=1), end=NOW)
    account.add_calls(10, rng=rng, start=NOW - timedelta(days=1), end=NOW, ended=False)
    for raw in account.calls.values():
        call = Call.model_validate(raw)
        assert call.id == raw["id"] and call.org_id == account.org_id
        assert call.created_at.tzinfo is not None
        if raw["status"] == "ended":
            assert call.ended_at is not None and call.cost == raw["cost"]
            assert call.costs and call.cost_breakdown and call.artifact and call.analysis
            assert_artifact_shaped(raw["artifact"])
    with_outputs = [c for c in account.calls.values()
                    if "structuredOutputs" in c.get("artifact", {})]
    assert 10 <= len(with_outputs) <= 38  # most ended calls, not all
    assert all("scorecards" in c["artifact"] for c in with_outputs)


def test_recordings_redirect_to_signed_urls_that_expire() -> None:
    fake = FakeVapi(seed=5, recording_ttl=1)
    account = fake.add_account("recording-key", calls=1)
    call_id = next(iter(account.calls))
    with serve(fake) as url, httpx.Client(base_url=url) as client:
        auth = {"Authorization": "Bearer recording-key"}
        assert client.get(f"/call/{call_id}/mono-recording").status_code == 401
        assert client.get(f"/call/{call_id}/mono-recording",
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/call/nope/mono-recording", headers=auth).status_code == 404
        assert client.get(f"/call/{call_id}/left-recording", headers=auth).status_code == 404
        for channel in ("mono", "stereo", "customer", "assistant"):
            answer = client.get(f"/call/{call_id}/{channel}-recording", headers=auth)
            assert answer.status_code == 302
            location = answer.headers["location"]
            assert location.startswith(f"{url}/files/{call_id}-{channel}.wav?expires=")
        audio = client.get(location)
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        assert client.get(location.replace("signature=", "signature=0")).status_code == 403
        assert client.get(location, headers={"Range": "bytes=999999-"}).status_code == 416
        expires = int(httpx.URL(location).params["expires"])
        time.sleep(max(0.0, expires - time.time()) + 0.05)
        assert client.get(location).status_code == 403


def _literal_values(alias: object) -> set[str]:
    """The string values of one of the SDK's `Union[Literal[...], Any]` enums."""
    import typing

    return {value for member in typing.get_args(alias) if typing.get_origin(member)
            is typing.Literal for value in typing.get_args(member)}


def test_wiring_writes_are_shaped_as_the_official_sdk_models() -> None:
    """What Calltrail sends to wire an account (`calltrail_common.vapi_wiring`'s bodies) and
    what the fake answers, checked against the SDK's models (its own modules: the package
    import is slow). The models allow extra fields, so an unknown one is asserted away."""
    from vapi.assistants.types.update_assistant_dto_server_messages_item import (
        UpdateAssistantDtoServerMessagesItem,
    )
    from vapi.phone_numbers.types.update_phone_numbers_request_body import (
        UpdatePhoneNumbersRequestBody_Twilio,
    )
    from vapi.phone_numbers.types.update_phone_numbers_response import (
        UpdatePhoneNumbersResponse_Twilio,
    )
    from vapi.types.assistant import Assistant
    from vapi.types.create_webhook_credential_dto import CreateWebhookCredentialDto
    from vapi.types.server import Server
    from vapi.types.webhook_credential import WebhookCredential

    from calltrail_common.vapi_wiring import (
        credential_body,
        target_of,
        unwire_body,
        wire_body,
    )

    def exact(model: object) -> object:
        assert not getattr(model, "model_extra", None), model  # every field is the SDK's
        return model

    fake = FakeVapi(seed=8)
    account = fake.add_account("wiring-key", phone_numbers=1, assistants=1)
    url = "https://ingest.example.com/webhooks/vapi/ep_1"
    with serve(fake) as base_url, httpx.Client(
            base_url=base_url, headers={"Authorization": "Bearer wiring-key"}) as http:
        sent = credential_body("whsec-secret")
        request = CreateWebhookCredentialDto.model_validate(sent)
        plan = exact(request.authentication_plan)
        assert plan.type == "hmac" and plan.secret_key == "whsec-secret"
        assert plan.algorithm == "sha256" and plan.include_timestamp is True
        assert plan.payload_format == "{timestamp}.{body}" and plan.signature_encoding == "hex"
        assert set(request.model_extra or {}) == {"provider"}  # the union's discriminator
        made = http.post("/credential", json=sent)
        assert made.status_code == 201
        credential = WebhookCredential.model_validate(made.json())
        assert credential.provider == "webhook" and credential.org_id == account.org_id
        assert credential.authentication_plan.type == "hmac"
        listed = http.get("/credential").json()
        assert [WebhookCredential.model_validate(c).id for c in listed] == [credential.id]

        assistant = target_of("assistant", account.assistants[0])
        assert assistant is not None
        body = wire_body(assistant, url, credential.id)
        assert set(body) == {"server", "serverMessages"}
        server = exact(Server.model_validate(body["server"]))
        assert server.url == url and server.credential_id == credential.id
        assert set(body["serverMessages"]) <= _literal_values(
            UpdateAssistantDtoServerMessagesItem)
        patched = http.patch(f"/assistant/{assistant.vapi_id}", json=body)
        assert patched.status_code == 200
        answer = Assistant.model_validate(patched.json())
        assert answer.server is not None and answer.server.credential_id == credential.id
        assert answer.server_messages == body["serverMessages"]

        number = target_of("phone-number", account.phone_numbers[0])
        assert number is not None
        body = wire_body(number, url, credential.id)
        request_number = exact(UpdatePhoneNumbersRequestBody_Twilio.model_validate(body))
        assert request_number.server is not None and request_number.server.url == url
        patched = http.patch(f"/phone-number/{number.vapi_id}", json=body)
        assert patched.status_code == 200
        answer_number = UpdatePhoneNumbersResponse_Twilio.model_validate(patched.json())
        assert answer_number.server is not None and answer_number.server.url == url
        restore = unwire_body("phone-number", number.provider, None, None)
        exact(UpdatePhoneNumbersRequestBody_Twilio.model_validate(restore))
        cleared = http.patch(f"/phone-number/{number.vapi_id}", json=restore).json()
        assert UpdatePhoneNumbersResponse_Twilio.model_validate(cleared).server is None

        # Refused as Vapi refuses: an unknown credential, a field it has not, a bad key.
        unknown = http.patch(f"/assistant/{assistant.vapi_id}",
                             json={"server": {"url": url, "credentialId": "nope"}})
        assert unknown.status_code == 400
        assert http.patch(f"/assistant/{assistant.vapi_id}",
                          json={"serverUrl": url}).status_code == 400
        assert http.patch("/assistant/missing", json={}).status_code == 404
        for method, path in (("PATCH", f"/assistant/{assistant.vapi_id}"),
                             ("PATCH", f"/phone-number/{number.vapi_id}"),
                             ("POST", "/credential"), ("GET", "/credential")):
            refused = http.request(method, path, json={},
                                   headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401 and refused.json() == UNAUTHORIZED_BODY
