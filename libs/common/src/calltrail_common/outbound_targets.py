"""Where an outbound webhook may be sent (decision 40). Pure: no I/O; resolving a host name
is the dispatcher's, which then checks every address it got with `refused_address`.

A target is refused when it is not a plain http(s) URL, or when an address it names is not
on the public internet (loopback, private, link-local, shared, multicast, reserved,
unspecified), unless the operator allows private targets (`WEBHOOKS_ALLOW_PRIVATE_TARGETS`).
Without that setting only https is accepted: the bodies carry callers' personal data.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class TargetRefused(ValueError):
    """The URL may not be a webhook target; the message says why (it names no secret)."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str  # "https" or "http"
    host: str  # lower case; an IP literal without brackets
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_is_address(self) -> bool:
        return _address(self.host) is not None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refused_address(host: str) -> str | None:
    """Why this IP address may not be a target, or None when it is a public one. A string
    that is no IP address is refused too (the caller passes resolved addresses)."""
    address = _address(host)
    if address is None:
        return "not an IP address"
    for reason, matches in (("loopback", address.is_loopback),
                            ("unspecified", address.is_unspecified),
                            ("link-local", address.is_link_local),
                            ("multicast", address.is_multicast),
                            ("private", address.is_private),
                            ("reserved", address.is_reserved)):
        if matches:
            return f"{reason} address"
    if not address.is_global:
        return "not a public address"
    return None


def check_url(url: str, *, allow_private: bool) -> Target:
    """The target `url` names, or `TargetRefused` saying why it may not be one."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise TargetRefused("not a valid URL") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise TargetRefused("the URL must start with https://" if not allow_private
                            else "the URL must start with https:// or http://")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL may not carry a user name or password")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefused("the URL has no host")
    if parts.fragment:
        raise TargetRefused("the URL may not have a #fragment")
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            raise TargetRefused("the host is loopback")
        if _address(host) is not None and (reason := refused_address(host)):
            raise TargetRefused(f"the host is a {reason}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path)
