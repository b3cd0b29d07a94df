"""Webhook credentials as Vapi sends them (contract section 3), checked over raw bytes.

Any one of these is accepted, against any of the endpoint's secrets (several during a
rotation): `X-Vapi-Secret: <secret>`, `Authorization: Bearer <secret>`, or an HMAC-SHA256
hex signature in `X-Vapi-Signature` / `X-Signature` (optional `sha256=` prefix) over the
body, or over `{timestamp}.{body}` when `X-Timestamp` is present. Comparisons run in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from ingest.errors import Unauthorized

MAX_TIMESTAMP_SKEW_SECONDS = 5 * 60
# A Unix time above this is in milliseconds (1e11 seconds is the year 5138).
_MILLISECONDS_THRESHOLD = 100_000_000_000


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value.strip() if value else None


def _matches_any(candidate: bytes, secrets: Sequence[bytes]) -> bool:
    # Check every secret, so timing does not say which one (or whether any) matched.
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(candidate, secret)
    return matched


def timestamp_seconds(raw: str) -> float:
    """X-Timestamp in seconds or milliseconds, as Unix seconds; ValueError when not a number."""
    value = float(raw)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value / 1000 if value > _MILLISECONDS_THRESHOLD else value


def _signature_matches(
    signature: str, body: bytes, timestamp: str | None, secrets: Sequence[bytes], now: float
) -> bool:
    if signature.lower().startswith("sha256="):
        signature = signature[len("sha256="):]
    try:
        expected_digest = bytes.fromhex(signature)
    except ValueError:
        return False
    if timestamp is not None:
        try:
            sent_at = timestamp_seconds(timestamp)
        except ValueError:
            return False
        if abs(now - sent_at) > MAX_TIMESTAMP_SKEW_SECONDS:
            return False
        signed = timestamp.encode() + b"." + body
    else:
        signed = body
    matched = False
    for secret in secrets:
        digest = hmac.new(secret, signed, hashlib.sha256).digest()
        matched |= hmac.compare_digest(digest, expected_digest)
    return matched


def verify_credentials(
    headers: Mapping[str, str], body: bytes, secrets: Sequence[bytes], *, now: float
) -> None:
    """Raise `Unauthorized` unless one credential in `headers` matches one of `secrets`.

    `headers` is looked up by lower-case name. No secrets means a closed endpoint.
    """
    if not secrets:
        raise Unauthorized
    legacy = _header(headers, "x-vapi-secret")
    if legacy is not None and _matches_any(legacy.encode(), secrets):
        return
    authorization = _header(headers, "authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and _matches_any(token.strip().encode(), secrets):
            return
    signature = _header(headers, "x-vapi-signature") or _header(headers, "x-signature")
    if signature is not None and _signature_matches(
        signature, body, _header(headers, "x-timestamp"), secrets, now
    ):
        return
    raise Unauthorized
