"""The agency roll-up's rules: a client's figures from its row, totals, and the order."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from api.errors import InvalidParameter
from api.rollup import ClientFigures, client_figures, parse_sort, sort_clients, totals


def _client(name: str, calls: int, cost: str, markup: str = "0", evaluated: int = 0,
            succeeded: int = 0) -> ClientFigures:
    return ClientFigures(uuid.uuid4(), name, Decimal(markup), calls, Decimal(calls * 60),
                         Decimal(cost), calls // 2, evaluated, succeeded)


def test_a_row_reads_verdicts_as_the_overview_does() -> None:
    figures = client_figures({
        "id": uuid.uuid4(), "name": "Bright Dental", "markup_percent": Decimal(20),
        "calls": 7, "seconds": Decimal(420), "cost": Decimal("1.50"), "new_leads": 2,
        "verdicts": ["true", "false", "Pass", "7/10"], "verdict_calls": [3, 1, 2, 1],
        "measure_kind": None, "measure_source_id": None, "pass_mark": None,
        "signal_values": [], "signal_evaluations": [], "signal_calls": []})
    assert (figures.evaluated, figures.succeeded) == (6, 5)
    assert figures.success_rate == round(5 / 6, 6)
    assert figures.billed == Decimal("1.800000")


def test_a_row_counts_by_the_clients_success_measure_as_its_overview_does() -> None:
    """Of the 7 calls, 3 carry the client's scorecard: 2 of them evaluated true, 1 not."""
    figures = client_figures({
        "id": uuid.uuid4(), "name": "Bright Dental", "markup_percent": Decimal(0),
        "calls": 7, "seconds": Decimal(420), "cost": Decimal("1.50"), "new_leads": 2,
        "verdicts": ["true", "false"], "verdict_calls": [4, 1],
        "measure_kind": "scorecard", "measure_source_id": "qa", "pass_mark": Decimal(80),
        "signal_values": [Decimal(90), Decimal(50), Decimal(80)],
        "signal_evaluations": ["true", "true", None], "signal_calls": [1, 1, 1]})
    # The 2 true evaluations are counted by their scores (90 passes, 50 fails) instead.
    assert (figures.evaluated, figures.succeeded) == (6, 4)


def test_totals_sum_exact_costs_and_each_clients_billed() -> None:
    a = _client("A", 3, "0.333333", markup="10", evaluated=2, succeeded=1)
    b = _client("B", 1, "1", markup="0", evaluated=0)
    total = totals([a, b])
    assert total.calls == 4
    assert total.cost == Decimal("1.333333")
    assert total.billed == Decimal("0.366666") + Decimal(1)
    assert total.success_rate == 0.5
    assert totals([]).success_rate is None


@pytest.mark.parametrize(("raw", "expected"), [
    (None, ("name", False)), ("", ("name", False)), ("calls", ("calls", False)),
    ("-billed", ("billed", True)), ("-success", ("success", True))])
def test_parse_sort(raw: str | None, expected: tuple[str, bool]) -> None:
    assert parse_sort(raw) == expected


@pytest.mark.parametrize("raw", ["id", "--calls", "cost;drop", "Calls"])
def test_parse_sort_refuses(raw: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_sort(raw)


def test_sort_by_any_column_ties_by_name_unknown_rates_last() -> None:
    a = _client("alpha", 5, "2", evaluated=4, succeeded=1)
    b = _client("Bravo", 5, "1", evaluated=0)
    c = _client("charlie", 1, "3", markup="100", evaluated=2, succeeded=2)
    assert [x.name for x in sort_clients([c, b, a], "name", False)] == [
        "alpha", "Bravo", "charlie"]
    assert [x.name for x in sort_clients([c, b, a], "calls", True)] == [
        "alpha", "Bravo", "charlie"]
    assert [x.name for x in sort_clients([a, b, c], "calls", False)] == [
        "charlie", "alpha", "Bravo"]
    assert [x.name for x in sort_clients([a, b, c], "billed", True)] == [
        "charlie", "alpha", "Bravo"]
    assert [x.name for x in sort_clients([a, b, c], "success", True)] == [
        "charlie", "alpha", "Bravo"]
    assert [x.name for x in sort_clients([a, b, c], "success", False)] == [
        "alpha", "charlie", "Bravo"]
