"""Where outbound webhooks may go: public https targets only, unless private ones are
allowed (decision 40)."""

from __future__ import annotations

import pytest

from calltrail_common.outbound_targets import Target, TargetRefused, check_url, refused_address


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback address"), ("::1", "loopback address"),
    ("10.1.2.3", "private address"), ("172.16.0.1", "private address"),
    ("192.168.1.1", "private address"), ("169.254.169.254", "link-local address"),
    ("fe80::1", "link-local address"), ("0.0.0.0", "unspecified address"),
    ("224.0.0.1", "multicast address"), ("::ffff:127.0.0.1", "loopback address"),
    ("::ffff:10.0.0.1", "private address"), ("100.64.0.1", "not a public address"),
    ("fd00::1", "private address"), ("240.0.0.1", "private address"),
    ("example.com", "not an IP address"),
])
def test_addresses_off_the_public_internet_are_refused(address: str, reason: str) -> None:
    assert refused_address(address) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_accepted(address: str) -> None:
    assert refused_address(address) is None


def test_a_public_https_url_is_a_target() -> None:
    assert check_url("https://Hooks.Example.com/in?x=1", allow_private=False) == Target(
        "https", "hooks.example.com", 443, "/in?x=1")
    assert check_url("https://example.com:8443", allow_private=False) == Target(
        "https", "example.com", 8443, "/")


@pytest.mark.parametrize(("url", "message"), [
    ("http://example.com/", "must start with https://"),
    ("ftp://example.com/", "must start with https://"),
    ("https://user:pw@example.com/", "user name or password"),
    ("https:///path", "no host"),
    ("https://127.0.0.1/", "loopback address"),
    ("https://[::1]/", "loopback address"),
    ("https://localhost/", "loopback"),
    ("https://api.localhost/", "loopback"),
    ("https://169.254.169.254/latest", "link-local address"),
    ("https://example.com:99999/", "not a valid URL"),
    ("https://example.com/#x", "fragment"),
    ("https://example.com/" + "a" * 2048, "longer than"),
])
def test_refused_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(TargetRefused, match=message):
        check_url(url, allow_private=False)


def test_private_targets_and_http_pass_when_allowed() -> None:
    assert check_url("http://127.0.0.1:9000/hook", allow_private=True) == Target(
        "http", "127.0.0.1", 9000, "/hook")
    assert check_url("https://localhost/", allow_private=True).host_is_address is False
    with pytest.raises(TargetRefused, match="https:// or http://"):
        check_url("ftp://127.0.0.1/", allow_private=True)


@pytest.mark.parametrize(("url", "allow_private", "message"), [
    ("http://example.com/", False, "the URL must start with https://"),
    ("ftp://example.com/", True, "the URL must start with https:// or http://"),
    ("https://example.com:99999/", False, "not a valid URL"),
    ("https://user@example.com/", False, "the URL may not carry a user name or password"),
    ("https:///path", False, "the URL has no host"),
    ("https://example.com/#x", False, "the URL may not have a #fragment"),
    ("https://localhost/", False, "the host is loopback"),
    ("https://10.0.0.1/", False, "the host is a private address"),
    ("https://[4000::1]/", False, "the host is a reserved address"),
    ("https://example.com/" + "a" * 2029, False, "the URL is longer than 2048 characters"),
])
def test_a_refusal_says_exactly_why(url: str, allow_private: bool, message: str) -> None:
    """The message is what the API and the settings page show: whole, in these words."""
    with pytest.raises(TargetRefused) as refused:
        check_url(url, allow_private=allow_private)
    assert str(refused.value) == message


def test_a_url_of_the_longest_length_is_accepted() -> None:
    url = "https://example.com/" + "a" * 2028
    assert len(url) == 2048
    assert check_url(url, allow_private=False).path == "/" + "a" * 2028


def test_a_trailing_dot_is_dropped_and_http_defaults_to_port_80() -> None:
    assert check_url("https://Example.com./in", allow_private=False) == Target(
        "https", "example.com", 443, "/in")
    assert check_url("http://10.0.0.1/x", allow_private=True) == Target(
        "http", "10.0.0.1", 80, "/x")
    assert refused_address("4000::1") == "reserved address"
