"""The dashboard's session and CSRF rules. Pure: cookies and form values in, verdicts out.

The session cookie holds the organization's API token itself (HttpOnly, so no script reads
it; SameSite=Lax, so other sites' requests do not carry it on a POST; Secure over https). It
is checked on every request like a Bearer token, so revoking the token signs the browser out.

CSRF: a random nonce cookie (HttpOnly, SameSite=Strict) and, in every form, an HMAC of the
session token keyed by that nonce. A forged form knows neither the nonce nor the token; a
token planted by a sibling site's cookie does not match a session it cannot read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from api.auth import MAX_TOKEN_LENGTH

SESSION_COOKIE = "calltrail_session"
CSRF_COOKIE = "calltrail_csrf"
CSRF_FIELD = "csrf"


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(nonce: str, session_token: str | None) -> str:
    digest = hmac.new(nonce.encode(), b"csrf|" + (session_token or "").encode(),
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_valid(nonce: str | None, session_token: str | None, submitted: str | None) -> bool:
    if not nonce or not submitted or len(submitted) > 100:
        return False
    return hmac.compare_digest(csrf_token(nonce, session_token), submitted)


def session_token(cookie: str | None) -> str | None:
    """The token a session cookie holds, or None when it holds nothing worth looking up."""
    token = None if cookie is None else cookie.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return token
