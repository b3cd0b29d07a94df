"""Webhook credentials as Vapi sends them (contract section 3), checked over raw bytes.

Any one of these is accepted, against any of the endpoint's live secrets (several during a
rotation): `X-Vapi-Secret: <secret>`, `Authorization: Bearer <secret>`, or an HMAC-SHA256
hex signature in `X-Vapi-Signature` / `X-Signature` (optional `sha256=` prefix) over
`{timestamp}.{body}` with `X-Timestamp`, or over the body alone when timestamps are not
required (`INGEST_HMAC_REQUIRE_TIMESTAMP=false`). Comparisons run in constant time.

Checked in two steps so that a request that cannot be authenticated is refused before its
body is read: `check_headers` settles everything but the HMAC itself (no secrets, no
credential, a wrong header secret, a missing or stale timestamp); only a signature is then
checked over the body, by `check_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ingest.errors import Unauthorized

MAX_TIMESTAMP_SKEW_SECONDS = 5 * 60
# A Unix time above this is in milliseconds (1e11 seconds is the year 5138).
_MILLISECONDS_THRESHOLD = 100_000_000_000


@dataclass(frozen=True, slots=True)
class PendingSignature:
    """An HMAC whose headers passed, left to check over the body."""

    digest: bytes
    timestamp: str | None


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


def _pending_signature(signature: str, timestamp: str | None, *, now: float,
                       require_timestamp: bool) -> PendingSignature | None:
    if signature.lower().startswith("sha256="):
        signature = signature[len("sha256="):]
    try:
        digest = bytes.fromhex(signature)
    except ValueError:
        return None
    if timestamp is None:
        # Without a timestamp a captured request could be replayed for ever.
        return None if require_timestamp else PendingSignature(digest, None)
    try:
        sent_at = timestamp_seconds(timestamp)
    except ValueError:
        return None
    if abs(now - sent_at) > MAX_TIMESTAMP_SKEW_SECONDS:
        return None
    return PendingSignature(digest, timestamp)


def check_headers(headers: Mapping[str, str], secrets: Sequence[bytes], *, now: float,
                  require_timestamp: bool) -> PendingSignature | None:
    """Before the body: None when a header secret matched, else the HMAC left to check.

    Raises `Unauthorized` when nothing in `headers` can match: no secrets (a closed
    endpoint), no credential at all, a wrong header secret without a signature, a
    signature that is not hex, or whose timestamp is missing (when required), not a number
    or more than five minutes off. `headers` is looked up by lower-case name.
    """
    if not secrets:
        raise Unauthorized
    legacy = _header(headers, "x-vapi-secret")
    if legacy is not None and _matches_any(legacy.encode(), secrets):
        return None
    authorization = _header(headers, "authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and _matches_any(token.strip().encode(), secrets):
            return None
    signature = _header(headers, "x-vapi-signature") or _header(headers, "x-signature")
    if signature is not None:
        pending = _pending_signature(signature, _header(headers, "x-timestamp"), now=now,
                                     require_timestamp=require_timestamp)
        if pending is not None:
            return pending
    raise Unauthorized


def check_signature(pending: PendingSignature, body: bytes, secrets: Sequence[bytes]) -> None:
    """Raise `Unauthorized` unless the HMAC of the raw body matches one of `secrets`."""
    signed = body if pending.timestamp is None else pending.timestamp.encode() + b"." + body
    matched = False
    for secret in secrets:
        digest = hmac.new(secret, signed, hashlib.sha256).digest()
        matched |= hmac.compare_digest(digest, pending.digest)
    if not matched:
        raise Unauthorized


def verify_credentials(headers: Mapping[str, str], body: bytes, secrets: Sequence[bytes], *,
                       now: float, require_timestamp: bool) -> None:
    """Both steps at once: raise `Unauthorized` unless one credential matches one secret."""
    pending = check_headers(headers, secrets, now=now, require_timestamp=require_timestamp)
    if pending is not None:
        check_signature(pending, body, secrets)
