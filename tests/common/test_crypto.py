"""Sealed API keys: AES-256-GCM bound to the organization, named by key, rotatable."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calltrail_common import crypto
from calltrail_common.crypto import CryptoError, KeyRing, TamperedCiphertext, UnknownKey
from calltrail_common.settings import Settings, SettingsError

OLD_KEY = "old-encryption-key-" + "o" * 32
NEW_KEY = "new-encryption-key-" + "n" * 32
ORG = uuid.UUID("6f1c1a52-9d5e-4c1e-8a43-0c6f0b1f2a10")
OTHER_ORG = uuid.UUID("0b9a7f3e-5d2c-4e8b-9f10-2a3b4c5d6e7f")
API_KEY = "vapi-private-3f8e2d1c-aaaa-bbbb-cccc-0123456789ab"

old_ring = KeyRing(OLD_KEY)
new_ring = KeyRing(NEW_KEY)
rotating_ring = KeyRing(NEW_KEY, previous=OLD_KEY)

api_keys = st.text(max_size=200)


@given(api_keys)
def test_round_trip(api_key: str) -> None:
    sealed = new_ring.seal(api_key, org_id=ORG)
    assert new_ring.open(sealed, org_id=ORG) == api_key
    assert len(sealed) == crypto.MIN_SEALED_BYTES + len(api_key.encode())


def test_org_id_as_text_or_uuid_is_the_same_organization() -> None:
    sealed = new_ring.seal(API_KEY, org_id=str(ORG))
    assert new_ring.open(sealed, org_id=ORG) == API_KEY
    assert new_ring.open(sealed, org_id=str(ORG).upper()) == API_KEY


def test_format_names_its_version_and_key() -> None:
    sealed = new_ring.seal(API_KEY, org_id=ORG)
    assert sealed[:1] == b"\x01"
    assert sealed[1:9] == new_ring.seal("x", org_id=OTHER_ORG)[1:9]
    assert sealed[1:9] != old_ring.seal(API_KEY, org_id=ORG)[1:9]
    assert API_KEY.encode() not in sealed


@given(st.data())
def test_a_flipped_bit_anywhere_is_tampering(data: st.DataObject) -> None:
    sealed = bytearray(rotating_ring.seal(data.draw(api_keys), org_id=ORG))
    position = data.draw(st.integers(0, len(sealed) - 1), label="position")
    sealed[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    with pytest.raises(TamperedCiphertext):
        rotating_ring.open(bytes(sealed), org_id=ORG)


def test_a_flipped_bit_in_the_key_id_is_tampering_under_either_key() -> None:
    for sealed in (old_ring.seal(API_KEY, org_id=ORG), new_ring.seal(API_KEY, org_id=ORG)):
        changed = bytearray(sealed)
        changed[3] ^= 0x10
        with pytest.raises(TamperedCiphertext):
            rotating_ring.open(bytes(changed), org_id=ORG)


@given(st.data())
def test_truncated_or_extended_is_tampering(data: st.DataObject) -> None:
    sealed = new_ring.seal(data.draw(api_keys), org_id=ORG)
    cut = data.draw(st.integers(0, len(sealed) - 1), label="cut")
    with pytest.raises(TamperedCiphertext):
        new_ring.open(sealed[:cut], org_id=ORG)
    with pytest.raises(TamperedCiphertext):
        new_ring.open(sealed + data.draw(st.binary(min_size=1, max_size=20)), org_id=ORG)


@pytest.mark.parametrize("version", [b"\x00", b"\x02", b"\xff"])
def test_an_unknown_version_is_refused(version: bytes) -> None:
    sealed = new_ring.seal(API_KEY, org_id=ORG)
    with pytest.raises(TamperedCiphertext):
        new_ring.open(version + sealed[1:], org_id=ORG)


def test_another_organizations_ciphertext_does_not_open() -> None:
    sealed = new_ring.seal(API_KEY, org_id=ORG)
    with pytest.raises(TamperedCiphertext) as error:
        new_ring.open(sealed, org_id=OTHER_ORG)
    assert API_KEY not in str(error.value)


def test_a_wrong_key_is_an_unknown_key() -> None:
    sealed = old_ring.seal(API_KEY, org_id=ORG)
    with pytest.raises(UnknownKey) as error:
        new_ring.open(sealed, org_id=ORG)
    assert OLD_KEY not in str(error.value) and NEW_KEY not in str(error.value)
    assert isinstance(error.value, CryptoError)
    with pytest.raises(UnknownKey):
        KeyRing(NEW_KEY, previous="yet-another-key-" + "y" * 32).open(sealed, org_id=ORG)


def test_during_a_rotation_old_ciphertexts_open_and_new_seals_use_the_new_key() -> None:
    old_sealed = old_ring.seal(API_KEY, org_id=ORG)
    assert rotating_ring.open(old_sealed, org_id=ORG) == API_KEY
    assert not rotating_ring.is_current(old_sealed)
    new_sealed = rotating_ring.seal(API_KEY, org_id=ORG)
    assert rotating_ring.is_current(new_sealed)
    assert new_ring.open(new_sealed, org_id=ORG) == API_KEY  # after ENCRYPTION_KEY_PREVIOUS goes
    with pytest.raises(UnknownKey):
        old_ring.open(new_sealed, org_id=ORG)


def test_is_current_reads_only_well_formed_sealed_keys() -> None:
    assert new_ring.is_current(new_ring.seal("", org_id=ORG))
    assert not new_ring.is_current(old_ring.seal("", org_id=ORG))
    assert not new_ring.is_current(new_ring.seal("", org_id=ORG)[:20])
    assert not new_ring.is_current(b"")


def test_the_same_key_as_current_and_previous_is_one_key() -> None:
    ring = KeyRing(NEW_KEY, previous=NEW_KEY)
    assert ring.open(new_ring.seal(API_KEY, org_id=ORG), org_id=ORG) == API_KEY


def test_two_seals_of_one_plaintext_differ() -> None:
    first, second = (new_ring.seal(API_KEY, org_id=ORG) for _ in range(2))
    assert first != second
    assert first[9:21] != second[9:21]  # the nonces
    assert new_ring.open(first, org_id=ORG) == new_ring.open(second, org_id=ORG)


@pytest.mark.parametrize(("current", "previous", "named"), [
    ("", None, "ENCRYPTION_KEY is required"),
    ("k" * 31, None, "ENCRYPTION_KEY must be at least 32"),
    ("k" * 32, "p" * 31, "ENCRYPTION_KEY_PREVIOUS must be at least 32"),
])
def test_a_missing_or_short_key_is_a_settings_error(current: str, previous: str | None,
                                                    named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        KeyRing(current, previous)


def _settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name in ("ENCRYPTION_KEY", "ENCRYPTION_KEY_PREVIOUS"):
        monkeypatch.delenv(name, raising=False)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize(("values", "named"), [
    ({}, "ENCRYPTION_KEY is required"),
    ({"encryption_key": ""}, "ENCRYPTION_KEY is required"),
    ({"encryption_key": "", "encryption_key_previous": OLD_KEY}, "ENCRYPTION_KEY is required"),
    ({"encryption_key": "short"}, "ENCRYPTION_KEY must be at least 32 characters"),
    ({"encryption_key": NEW_KEY, "encryption_key_previous": "short"},
     "ENCRYPTION_KEY_PREVIOUS must be at least 32 characters"),
])
def test_from_settings_refuses_a_missing_or_short_key(
        monkeypatch: pytest.MonkeyPatch, values: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        KeyRing.from_settings(_settings(monkeypatch, **values))


def test_from_settings_reads_both_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing.from_settings(_settings(monkeypatch, encryption_key=NEW_KEY,
                                           encryption_key_previous=OLD_KEY))
    assert ring.open(old_ring.seal(API_KEY, org_id=ORG), org_id=ORG) == API_KEY
    assert ring.is_current(new_ring.seal(API_KEY, org_id=ORG))
    only_current = KeyRing.from_settings(_settings(monkeypatch, encryption_key=NEW_KEY,
                                                   encryption_key_previous=""))
    with pytest.raises(UnknownKey):
        only_current.open(old_ring.seal(API_KEY, org_id=ORG), org_id=ORG)


def test_from_settings_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCRYPTION_KEY", "too-short")
    with pytest.raises(SettingsError, match="ENCRYPTION_KEY must be"):
        KeyRing.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    monkeypatch.setenv("ENCRYPTION_KEY", NEW_KEY)
    assert KeyRing.from_settings(Settings(_env_file=None)).is_current(  # type: ignore[call-arg]
        new_ring.seal(API_KEY, org_id=ORG))


def test_no_key_material_in_repr() -> None:
    secrets = [OLD_KEY, NEW_KEY, "o" * 16, "n" * 16]
    derived = [crypto._hkdf(key.encode(), info, n)
               for key in (OLD_KEY, NEW_KEY)
               for info, n in ((crypto.DATA_KEY_INFO, 32), (crypto.KEY_ID_INFO, 8))]
    for shown in (repr(rotating_ring), str(rotating_ring), f"{rotating_ring!r}"):
        assert not any(secret in shown for secret in secrets)
        assert not any(key.hex() in shown or repr(key) in shown for key in derived)
    assert "1 previous" in repr(rotating_ring) and "0 previous" in repr(new_ring)
    assert not hasattr(rotating_ring, "__dict__")  # nothing but derived keys, in slots


def test_errors_never_carry_plaintext_or_key() -> None:
    sealed = old_ring.seal(API_KEY, org_id=ORG)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    attempts = [(new_ring, sealed, ORG), (old_ring, tampered, ORG), (old_ring, sealed, OTHER_ORG),
                (old_ring, sealed[:10], ORG)]
    for ring, blob, org in attempts:
        with pytest.raises(CryptoError) as error:
            ring.open(blob, org_id=org)
        message = str(error.value) + repr(error.value)
        assert API_KEY not in message and OLD_KEY not in message and NEW_KEY not in message
        assert error.value.__context__ is None or error.value.__suppress_context__
