"""Sealing connected accounts' Vapi API keys at rest (contract section 6). Pure: no I/O.

Keys. The data key is never the ENCRYPTION_KEY text itself: it is derived from the text's
UTF-8 bytes with HKDF-SHA256,

    salt  b"calltrail/encryption-key/v1"
    info  b"calltrail/vapi-api-key/aes-256-gcm/v1"     -> 32-byte AES-256-GCM data key
    info  b"calltrail/vapi-api-key/key-id/v1"          -> 8-byte key id

The key id is a separate HKDF output, so it names the key without revealing anything about
the data key. During a rotation ENCRYPTION_KEY_PREVIOUS stays readable: `open` picks the
key by id, `seal` always uses the current one.

Format (version 1), 37 bytes plus the plaintext's UTF-8 length:

    b"\\x01" | key id (8) | nonce (12, os.urandom per seal) | ciphertext | GCM tag (16)

Authenticated data: the 9-byte header (version and key id), then
b"calltrail/vapi-api-key/v1/" and the organization's 16 UUID bytes. A ciphertext copied to
another organization's row, or with any bit changed, fails to open. A key id that names no
key of the ring is UnknownKey, unless one of the ring's keys authenticates the ciphertext
under its own id: then the id itself was changed, and that is TamperedCiphertext.

Errors, none of whose messages carries plaintext or key material:

    CryptoError
    ├── UnknownKey           sealed under a key that is neither ENCRYPTION_KEY nor
    │                        ENCRYPTION_KEY_PREVIOUS
    └── TamperedCiphertext   authentication failed: modified, another organization's,
                             truncated, or of an unknown version
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from calltrail_common.settings import MIN_ENCRYPTION_KEY_LENGTH, SettingsError

if TYPE_CHECKING:
    from calltrail_common.settings import Settings

VERSION = b"\x01"
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(VERSION) + KEY_ID_BYTES
MIN_SEALED_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
_NONCE_END = HEADER_BYTES + NONCE_BYTES

HKDF_SALT = b"calltrail/encryption-key/v1"
DATA_KEY_INFO = b"calltrail/vapi-api-key/aes-256-gcm/v1"
KEY_ID_INFO = b"calltrail/vapi-api-key/key-id/v1"
AAD_PREFIX = b"calltrail/vapi-api-key/v1/"


class CryptoError(Exception):
    """A sealed key cannot be opened; the message never carries plaintext or key material."""


class UnknownKey(CryptoError):
    """Sealed under a key that is neither ENCRYPTION_KEY nor ENCRYPTION_KEY_PREVIOUS."""


class TamperedCiphertext(CryptoError):
    """Authentication failed: modified, another organization's, truncated or unknown version."""


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=HKDF_SALT, info=info).derive(
        secret)


@dataclass(frozen=True, repr=False)
class _Key:
    key_id: bytes
    aead: AESGCM

    @classmethod
    def derive(cls, text: str) -> _Key:
        secret = text.encode()
        return cls(_hkdf(secret, KEY_ID_INFO, KEY_ID_BYTES),
                   AESGCM(_hkdf(secret, DATA_KEY_INFO, 32)))

    def header(self) -> bytes:
        return VERSION + self.key_id


def _validated(name: str, text: str) -> str:
    if len(text) < MIN_ENCRYPTION_KEY_LENGTH:
        raise SettingsError(f"{name} must be at least {MIN_ENCRYPTION_KEY_LENGTH} characters long")
    return text


def _associated_data(header: bytes, org_id: uuid.UUID | str) -> bytes:
    org = org_id if isinstance(org_id, uuid.UUID) else uuid.UUID(org_id)
    return header + AAD_PREFIX + org.bytes


class KeyRing:
    """ENCRYPTION_KEY (seals and opens) and, during a rotation, ENCRYPTION_KEY_PREVIOUS (opens).

    Holds only derived keys, never the ENCRYPTION_KEY text, and prints none of them.
    """

    __slots__ = ("_current", "_keys")

    def __init__(self, current: str, previous: str | None = None) -> None:
        if not current:
            raise SettingsError("ENCRYPTION_KEY is required here and is not set")
        self._current = _Key.derive(_validated("ENCRYPTION_KEY", current))
        self._keys = {self._current.key_id: self._current}
        if previous:  # empty means no rotation in progress (contract section 2)
            old = _Key.derive(_validated("ENCRYPTION_KEY_PREVIOUS", previous))
            self._keys.setdefault(old.key_id, old)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        current, previous = settings.encryption_key, settings.encryption_key_previous
        return cls("" if current is None else current.get_secret_value(),
                   None if previous is None else previous.get_secret_value())

    def __repr__(self) -> str:
        return f"<KeyRing: current key and {len(self._keys) - 1} previous>"

    __str__ = __repr__

    def seal(self, plaintext: str, *, org_id: uuid.UUID | str) -> bytes:
        header = self._current.header()
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + self._current.aead.encrypt(
            nonce, plaintext.encode(), _associated_data(header, org_id))

    def open(self, sealed: bytes, *, org_id: uuid.UUID | str) -> str:
        sealed = bytes(sealed)
        if len(sealed) < MIN_SEALED_BYTES or sealed[:1] != VERSION:
            raise TamperedCiphertext("not a sealed key of a known version, or truncated")
        header, nonce = sealed[:HEADER_BYTES], sealed[HEADER_BYTES:_NONCE_END]
        body = sealed[_NONCE_END:]
        key = self._keys.get(header[len(VERSION):])
        if key is None:
            # A known key that authenticates under its own id means the key id itself was
            # changed: tampering, not a foreign key.
            for candidate in self._keys.values():
                if _decrypts(candidate, nonce, body, _associated_data(candidate.header(),
                                                                      org_id)):
                    raise TamperedCiphertext("the key id of a sealed key was modified")
            raise UnknownKey("sealed under neither ENCRYPTION_KEY nor ENCRYPTION_KEY_PREVIOUS")
        try:
            plaintext = key.aead.decrypt(nonce, body, _associated_data(header, org_id))
        except InvalidTag:
            raise TamperedCiphertext(
                "authentication failed: modified, or sealed for another organization") from None
        try:
            return plaintext.decode()
        except UnicodeDecodeError:
            raise TamperedCiphertext("the opened key is not UTF-8 text") from None

    def is_current(self, sealed: bytes) -> bool:
        """Sealed under ENCRYPTION_KEY? Reads the header only: it does not authenticate."""
        return len(sealed) >= MIN_SEALED_BYTES and sealed[:HEADER_BYTES] == self._current.header()


def _decrypts(key: _Key, nonce: bytes, body: bytes, associated_data: bytes) -> bool:
    try:
        key.aead.decrypt(nonce, body, associated_data)
    except InvalidTag:
        return False
    return True
