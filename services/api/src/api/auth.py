"""Reading the tenant API token from `Authorization: Bearer <token>`. Pure: the digest is
looked up by `calltrail_common.organizations.authenticate_token`."""

from __future__ import annotations

from api.errors import Unauthorized

# Tokens are "ct_" + 43 url-safe characters; anything far longer is no token of ours and
# is refused before it is hashed.
MAX_TOKEN_LENGTH = 256


def bearer_token(token: str | None) -> str:
    """The token of an `Authorization: Bearer` header (None: no such header, or another
    scheme); Unauthorized when there is none worth looking up."""
    token = None if token is None else token.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("an Authorization: Bearer <token> header with a valid token is "
                           "required")
    return token
