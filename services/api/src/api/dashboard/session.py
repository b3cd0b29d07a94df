"""The dashboard's cookie and CSRF rules. Pure: cookies and form values in, verdicts out.

The session cookie holds a random session id (`api.sessions`: stored only as a digest,
ended at sign-out, idle and absolute expiry). Over https (or when DASHBOARD_FORCE_HTTPS
says a proxy terminates TLS) cookies are `Secure` and named with the `__Host-` prefix, so
no sibling subdomain can set or shadow them; over plain http (a developer's machine) the
prefix is impossible and the plain names are used.

CSRF: a random nonce cookie (HttpOnly, SameSite=Strict) and, in every form, an HMAC of the
session id keyed by that nonce. A forged form knows neither; the nonce is replaced at every
sign-in, so a nonce planted before it (login CSRF) is worthless after.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

CSRF_FIELD = "csrf"
_SESSION = "calltrail_session"
_CSRF = "calltrail_csrf"
HOST_PREFIX = "__Host-"
HSTS = "max-age=31536000; includeSubDomains"


@dataclass(frozen=True)
class CookieNames:
    session: str
    csrf: str


def cookie_names(secure: bool) -> CookieNames:
    prefix = HOST_PREFIX if secure else ""
    return CookieNames(prefix + _SESSION, prefix + _CSRF)


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(nonce: str, session_id: str | None) -> str:
    digest = hmac.new(nonce.encode(), b"csrf|" + (session_id or "").encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_valid(nonce: str | None, session_id: str | None, submitted: str | None) -> bool:
    if not nonce or not submitted or len(submitted) > 100:
        return False
    return hmac.compare_digest(csrf_token(nonce, session_id), submitted)
