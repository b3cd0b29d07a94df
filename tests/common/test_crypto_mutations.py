"""The key ring says what is wrong, in words an operator can act on (issue 16, mutation
testing): each refusal's exception and message, none of them carrying key material."""

from __future__ import annotations

import os
import re
import uuid

import pytest

from calltrail_common.crypto import (
    HEADER_BYTES,
    NONCE_BYTES,
    KeyRing,
    TamperedCiphertext,
    UnknownKey,
    _associated_data,
)
from calltrail_common.settings import SettingsError

KEY = "crypto-mutation-test-key-0123456789abcdef"
OTHER = "crypto-mutation-other-key-0123456789abcdef"
ORG = uuid.UUID("00000000-0000-4000-8000-000000000001")


def refused(ring: KeyRing, sealed: bytes, kind: type[Exception], message: str,
            org: uuid.UUID = ORG) -> None:
    with pytest.raises(kind, match=f"^{re.escape(message)}$"):
        ring.open(sealed, org_id=org)


def test_a_key_ring_without_a_key_says_which_setting_is_missing() -> None:
    with pytest.raises(SettingsError, match=r"^ENCRYPTION_KEY is required here and is not set$"):
        KeyRing("")


def test_each_refusal_says_why() -> None:
    ring = KeyRing(KEY)
    sealed = ring.seal("vapi-key", org_id=ORG)
    truncated = "not a sealed key of a known version, or truncated"
    refused(ring, sealed[:HEADER_BYTES + NONCE_BYTES], TamperedCiphertext, truncated)
    refused(ring, b"\x02" + sealed[1:], TamperedCiphertext, truncated)
    forged_id = sealed[:1] + bytes(8) + sealed[HEADER_BYTES:]
    refused(ring, forged_id, TamperedCiphertext, "the key id of a sealed key was modified")
    refused(ring, KeyRing(OTHER).seal("vapi-key", org_id=ORG), UnknownKey,
            "sealed under neither ENCRYPTION_KEY nor ENCRYPTION_KEY_PREVIOUS")
    refused(ring, sealed, TamperedCiphertext,
            "authentication failed: modified, or sealed for another organization",
            org=uuid.uuid4())


def test_a_sealed_value_that_is_not_text_is_refused_saying_so() -> None:
    ring = KeyRing(KEY)
    current = ring._current  # sealing bytes that are not UTF-8 takes the key itself
    header, nonce = current.header(), os.urandom(NONCE_BYTES)
    sealed = header + nonce + current.aead.encrypt(nonce, b"\xff\xfe",
                                                   _associated_data(header, ORG))
    refused(ring, sealed, TamperedCiphertext, "the opened key is not UTF-8 text")
