"""`GET /api/calls/{id}/recording`: a redirect to a URL that plays now (decision 39): Vapi's
fresh one with a connected key (kept until shortly before it expires), else the stored
one; 404 for another organization's call or when there is none; 502 when Vapi is down."""

from __future__ import annotations

import io
import uuid
import wave
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api import recordings
from api.recordings import RecordingLinks, keep_seconds, stored_url, url_expiry
from calltrail_testkit.fake_vapi import FakeAccount, FakeVapi, byte_range
from tests.api.conftest import RunningApi, Tenant, assert_error, insert_call


async def _connected(api: RunningApi, fake: FakeVapi, key: str
                     ) -> tuple[Tenant, FakeAccount, str]:
    """A tenant whose Vapi key is connected, and a call Vapi knows (stored in Calltrail
    with an old presigned URL)."""
    tenant = await api.tenant()
    account = fake.add_account(key, phone_numbers=1, calls=1)
    connected = await tenant.client.post("/api/vapi/connect", json={"apiKey": key})
    assert connected.status_code == 200, connected.text
    vapi_call = next(iter(account.calls))
    call_id = await insert_call(api.connection, tenant.org_id, id=vapi_call,
                                recording_url="https://storage.vapi.example/old.wav")
    return tenant, account, call_id


def _recording_requests(account: FakeAccount) -> int:
    return sum(1 for _, path, _ in account.request_log if path.endswith("-recording"))


async def test_a_connected_key_redirects_to_vapis_fresh_url_which_plays(
        api: RunningApi, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, base = fake_vapi
    tenant, account, call_id = await _connected(api, fake, "rec-key-fresh")

    answer = await tenant.client.get(f"/api/calls/{call_id}/recording")
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(f"{base}/files/{call_id}-mono.wav?expires=")
    assert answer.headers["cache-control"] == "no-store"
    async with httpx.AsyncClient() as storage:
        audio = await storage.get(location)
        assert audio.status_code == 200
        assert audio.headers["content-type"] == "audio/wav"
        assert audio.headers["accept-ranges"] == "bytes"
        with wave.open(io.BytesIO(audio.content)) as wav:
            assert wav.getnframes() / wav.getframerate() == 1.5
        part = await storage.get(location, headers={"Range": "bytes=0-43"})
        assert part.status_code == 206 and len(part.content) == 44
        assert part.headers["content-range"] == f"bytes 0-43/{len(audio.content)}"

    # Kept: the second request (a seek, another page) does not ask Vapi again.
    again = await tenant.client.get(f"/api/calls/{call_id}/recording")
    assert again.headers["location"] == location
    assert _recording_requests(account) == 1
    stereo = await tenant.client.get(f"/api/calls/{call_id}/recording",
                                     params={"channel": "stereo"})
    assert stereo.status_code == 302
    assert f"/files/{call_id}-stereo.wav?" in stereo.headers["location"]
    assert _recording_requests(account) == 2
    assert_error(await tenant.client.get(f"/api/calls/{call_id}/recording",
                                         params={"channel": "left"}),
                 400, "invalid_parameter", "channel")


async def test_vapi_without_the_recording_down_or_refusing(
        api: RunningApi, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    tenant, account, call_id = await _connected(api, fake, "rec-key-faults")
    unknown = await insert_call(api.connection, tenant.org_id,
                                recording_url="https://storage.vapi.example/x.wav")
    assert_error(await tenant.client.get(f"/api/calls/{unknown}/recording"), 404,
                 "no_recording")

    account.fail_status = 503
    try:
        assert_error(await tenant.client.get(f"/api/calls/{call_id}/recording"), 502,
                     "vapi_unavailable")
    finally:
        account.fail_status = 0
    # A key Vapi refuses is as good as none: the stored URL.
    account.unauthorized = True
    refused = await tenant.client.get(f"/api/calls/{call_id}/recording")
    assert refused.status_code == 302
    assert refused.headers["location"] == "https://storage.vapi.example/old.wav"


async def test_without_a_key_the_stored_url_or_nothing(api: RunningApi) -> None:
    tenant = await api.tenant()
    stored = await insert_call(api.connection, tenant.org_id,
                               recording_url="https://rec.example/mono.wav",
                               stereo_recording_url="https://rec.example/stereo.wav")
    for channel, url in (("mono", "https://rec.example/mono.wav"),
                         ("stereo", "https://rec.example/stereo.wav")):
        answer = await tenant.client.get(f"/api/calls/{stored}/recording",
                                         params={"channel": channel})
        assert answer.status_code == 302 and answer.headers["location"] == url
    assert_error(await tenant.client.get(f"/api/calls/{stored}/recording",
                                         params={"channel": "customer"}), 404, "no_recording")
    unsafe = await insert_call(api.connection, tenant.org_id,
                               recording_url="javascript:alert(1)")
    none = await insert_call(api.connection, tenant.org_id)
    for call_id in (unsafe, none):
        assert_error(await tenant.client.get(f"/api/calls/{call_id}/recording"), 404,
                     "no_recording")

    other = await api.tenant("Bravo")
    for call_id in (stored, "no-such-call"):
        assert_error(await other.client.get(f"/api/calls/{call_id}/recording"), 404,
                     "not_found")


# --- the rules --------------------------------------------------------------------------

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("url", "expires"), [
    ("https://s.example/a.wav?Expires=1796472000&Signature=x",
     datetime(2026, 12, 5, 12, 0, tzinfo=UTC)),
    ("https://s.example/a.wav?X-Amz-Date=20261205T115500Z&X-Amz-Expires=300",
     datetime(2026, 12, 5, 12, 0, tzinfo=UTC)),
    ("https://s.example/a.wav", None),
    ("https://s.example/a.wav?expires=soon", None),
    ("https://s.example/a.wav?X-Amz-Date=yesterday&X-Amz-Expires=300", None),
    ("https://s.example/a.wav?X-Amz-Date=20261205T115500Z", None),  # no lifetime: unknown
    ("https://s.example/a.wav?X-Amz-Expires=300", None),
])
def test_url_expiry(url: str, expires: datetime | None, local_time_not_utc: None) -> None:
    """The same instant whatever the process's local time zone (S3's date is UTC)."""
    assert url_expiry(url) == expires


def test_keep_seconds() -> None:
    in_ten_minutes = int((NOW + timedelta(minutes=10)).timestamp())
    assert keep_seconds(f"https://s.example/a?expires={in_ten_minutes}", NOW) == 570
    assert keep_seconds(f"https://s.example/a?expires={int(NOW.timestamp()) + 10}", NOW) == 0
    assert keep_seconds("https://s.example/a", NOW) == recordings.UNKNOWN_EXPIRY_SECONDS


def test_stored_url() -> None:
    assert stored_url("mono", "https://a/m.wav", "https://a/s.wav") == "https://a/m.wav"
    assert stored_url("stereo", "https://a/m.wav", "https://a/s.wav") == "https://a/s.wav"
    assert stored_url("customer", "https://a/m.wav", None) is None
    assert stored_url("mono", "http://a/m.wav", None) is None


def test_links_expire_and_stay_bounded() -> None:
    now = [0.0]
    links = RecordingLinks(max_size=2, clock=lambda: now[0])
    org = uuid.uuid4()
    links.put((org, "a", "mono"), "https://a", 10)
    links.put((org, "b", "mono"), "https://b", 0)  # already due: not kept
    assert links.get((org, "b", "mono")) is None
    links.put((org, "c", "mono"), "https://c", 10)
    links.put((org, "d", "mono"), "https://d", 10)
    assert links.get((org, "a", "mono")) is None  # the oldest went first
    assert links.get((org, "c", "mono")) == "https://c"
    now[0] = 10.0
    assert links.get((org, "c", "mono")) is None
    links.put((org, "e", "mono"), "https://e", 10)
    links.forget(org)
    assert links.get((org, "e", "mono")) is None


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-99", (0, 99)), ("bytes=100-", (100, 999)),
    ("bytes=-10", (990, 999)), ("bytes=0-5000", (0, 999)), ("bytes=0-1,5-6", None),
    ("items=0-1", None),
])
def test_fake_storage_byte_ranges(header: str | None, expected: tuple[int, int] | None
                                  ) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=x-1", "bytes=-0"])
def test_fake_storage_refuses_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(ValueError):
        byte_range(header, 1000)
