"""The agency rules: markup arithmetic, who sees which cost, and what a brand may hold."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calltrail_common.agencies import (
    AS_STORED,
    AgencyError,
    CostView,
    billed,
    billed_float,
    cost_view,
    host_of,
    parse_accent,
    parse_host_name,
    parse_logo_url,
    parse_markup,
)


@pytest.mark.parametrize(("cost", "percent", "expected"), [
    ("1.00", "25", "1.250000"),
    ("0.123457", "10", "0.135803"),   # 0.1358027 rounds half up to the micro-dollar
    ("0.0000005", "0", "0.0000005"),  # no markup: the cost itself, unrounded
    ("0.000001", "50", "0.000002"),   # 0.0000015: half up
    ("3", "12.5", "3.375000"),
    ("2", "1000", "22.000000"),
    ("0.000003", "50", "0.000005"),   # 0.0000045: half up, not to the even 0.000004
    ("0.000001", "150", "0.000003"),  # 0.0000025: the same
    ("0", "30", "0.000000"),
])
def test_billed_is_exact_and_rounded_once_half_up(cost: str, percent: str,
                                                  expected: str) -> None:
    assert billed(Decimal(cost), Decimal(percent)) == Decimal(expected)
    assert billed(Decimal(cost), Decimal(percent)).as_tuple() == Decimal(expected).as_tuple()


@given(st.decimals(min_value=0, max_value=10**6, places=6),
       st.decimals(min_value=0, max_value=1000, places=3))
def test_billed_is_never_below_the_cost_and_within_half_a_micro_dollar(
        cost: Decimal, percent: Decimal) -> None:
    exact = cost * (100 + percent) / 100
    result = billed(cost, percent)
    assert result >= cost
    assert abs(result - exact) <= Decimal("0.0000005")


def test_billed_float_reads_the_float_as_its_shortest_decimal() -> None:
    assert billed_float(0.1, Decimal(20)) == 0.12
    assert billed_float(1.05, Decimal(0)) == 1.05


@pytest.mark.parametrize(("raw", "expected"), [
    ("25", Decimal("25.000")), ("0", Decimal("0.000")), ("12.5", Decimal("12.500")),
    ("1000", Decimal("1000.000")), ("0.125", Decimal("0.125")), (" 7 ", Decimal("7.000")),
])
def test_parse_markup(raw: str, expected: Decimal) -> None:
    assert parse_markup(raw) == expected


NOT_A_NUMBER = "the markup must be a number of percent: "
OUT_OF_RANGE = "the markup must be between 0 and 1000 percent"
TOO_PRECISE = "the markup has at most three decimal places"


@pytest.mark.parametrize(("raw", "message"), [
    ("-1", OUT_OF_RANGE), ("1000.001", OUT_OF_RANGE), ("NaN", OUT_OF_RANGE),
    ("Infinity", OUT_OF_RANGE), ("1e5", OUT_OF_RANGE),
    ("abc", NOT_A_NUMBER + "'abc'"), ("", NOT_A_NUMBER + "''"),
    ("0.0001", TOO_PRECISE), ("12.3455", TOO_PRECISE), ("999.9999", TOO_PRECISE),
])
def test_parse_markup_refuses_saying_why(raw: str, message: str) -> None:
    with pytest.raises(AgencyError) as refused:
        parse_markup(raw)
    assert str(refused.value) == message


def test_cost_view_the_one_rule() -> None:
    # a client's own people, and its token: what the client pays, only
    own = cost_view("organization", Decimal(25))
    assert own == CostView(Decimal(25), both=False)
    assert own.marked_up
    assert own.primary(2.0) == 2.5
    # the agency's people: the cost first, and what the client is billed beside it
    agency = cost_view("agency", Decimal(25))
    assert agency == CostView(Decimal(25), both=True)
    assert agency.primary(2.0) == 2.0
    assert agency.billed(2.0) == 2.5
    # no markup (a business, an agency, a client at 0%): one figure, the cost
    assert cost_view("organization", Decimal(0)) is AS_STORED
    assert cost_view("agency", Decimal(0)) is AS_STORED
    assert not AS_STORED.marked_up
    assert AS_STORED.primary(2.0) == 2.0


@pytest.mark.parametrize(("raw", "expected"), [("#1A2b3C", "#1a2b3c"), (" #00ff00", "#00ff00")])
def test_parse_accent(raw: str, expected: str) -> None:
    assert parse_accent(raw) == expected


@pytest.mark.parametrize("raw", ["red", "#fff", "#12345g", "#1234567", "1a2b3c",
                                 "#123456;}body{", "", "#12345 "])
def test_parse_accent_refuses(raw: str) -> None:
    with pytest.raises(AgencyError) as refused:
        parse_accent(raw)
    assert str(refused.value) == f"the accent colour must be written #rrggbb: {raw!r}"


LONGEST_LOGO_URL = "https://x.example/" + "a" * (2048 - len("https://x.example/"))


@pytest.mark.parametrize(("raw", "expected"), [
    (" https://cdn.acme.example/logo.png ", "https://cdn.acme.example/logo.png"),
    ("https://cdn.example/X-Logo!.png?v=2", "https://cdn.example/X-Logo!.png?v=2"),
    (LONGEST_LOGO_URL, LONGEST_LOGO_URL),
])
def test_parse_logo_url(raw: str, expected: str) -> None:
    assert parse_logo_url(raw) == expected


NOT_HTTPS = "the logo URL must be an https:// address"
UNSAFE = "the logo URL is too long or holds spaces, quotes or brackets"


@pytest.mark.parametrize(("raw", "message"), [
    ("http://cdn.example/logo.png", NOT_HTTPS), ("javascript:alert(1)", NOT_HTTPS),
    ("data:image/png;base64,AAAA", NOT_HTTPS), ("https://", NOT_HTTPS),
    ("//cdn.example/x", NOT_HTTPS),
    ("https://cdn.example/a b.png", UNSAFE), ('https://x.example/"><x', UNSAFE),
    (LONGEST_LOGO_URL + "a", UNSAFE),
    ("https://[::1", "the logo URL is not a URL: 'https://[::1'"),
])
def test_parse_logo_url_refuses_saying_why(raw: str, message: str) -> None:
    with pytest.raises(AgencyError) as refused:
        parse_logo_url(raw)
    assert str(refused.value) == message


# 253 characters, the most DNS allows, in labels of at most 63
LONGEST_HOST_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])


@pytest.mark.parametrize(("raw", "expected"), [
    ("Dashboard.Acme-Agency.com", "dashboard.acme-agency.com"),
    ("calls.example.", "calls.example"),
    (LONGEST_HOST_NAME, LONGEST_HOST_NAME)])
def test_parse_host_name(raw: str, expected: str) -> None:
    assert parse_host_name(raw) == expected


@pytest.mark.parametrize("raw", ["localhost", "acme.example:8080", "-a.example", "a_b.example",
                                 "https://acme.example", "", " . ", "a..example",
                                 ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62])])
def test_parse_host_name_refuses(raw: str) -> None:
    with pytest.raises(AgencyError) as refused:
        parse_host_name(raw)
    assert str(refused.value) == f"not a host name (like dashboard.acme-agency.com): {raw!r}"


@pytest.mark.parametrize(("header", "expected"), [
    ("Calls.Acme.example:8443", "calls.acme.example"), ("acme.example", "acme.example"),
    ("calls.acme.example.:8443", "calls.acme.example"), ("acme.example.", "acme.example"),
    (None, None), ("", None), (":8443", None), ("[::1]:8000", None),
    # not name:port (an IPv6 address without its brackets, or worse): no host name
    ("acme.example:80:90", None), ("fe80::1", None)])
def test_host_of(header: str | None, expected: str | None) -> None:
    assert host_of(header) == expected
