"""Vapi's structured outputs and scorecards on a call, read one way everywhere. Pure.

Where Vapi puts them (vapi.md; the SDK's `Artifact`): `artifact.structuredOutputs`, an
object keyed by structured-output id whose items are `{"name", "result"}` (the SDK's
`StructuredOutputRunResult`; a result is any JSON), and `artifact.scorecards`, an object
keyed by scorecard id whose items are `{"name", "score", "scoreNormalized",
"metricPoints"}` (Vapi's scorecard docs; the SDK types it as any object). Calls store both
as Vapi sent them; these rules read them:

- `outputs`, `scorecards`: the items, by name, for people.
- `success_signals`: what a call says about success, per source: a boolean output (1 or 0)
  and a scorecard's normalized score. An organization chooses which source counts
  (`calltrail_common.success_measures`); the daily figures keep every one.
- `contact`: the lead's name and email the outputs carry (the rule is on `contact`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

SignalKind = Literal["output", "scorecard"]
SIGNAL_KINDS: tuple[SignalKind, ...] = ("output", "scorecard")

_ID_MAX_CHARS = 255  # Vapi's ids are UUIDs; a longer key names nothing we can keep
_SCORE_QUANTUM = Decimal("0.01")
_SCORE_LIMIT = Decimal(1_000_000)  # normalized scores are 0-100; past this it is not one


@dataclass(frozen=True, slots=True)
class Output:
    id: str
    name: str | None
    result: Any


@dataclass(frozen=True, slots=True)
class Scorecard:
    id: str
    name: str | None
    score: float | None
    score_normalized: float | None
    metric_points: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, order=True)
class Signal:
    kind: SignalKind
    source_id: str
    value: Decimal  # an output: 1 (true) or 0 (false); a scorecard: its normalized score


@dataclass(frozen=True, slots=True)
class Contact:
    name: str | None = None
    email: str | None = None


def _id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= _ID_MAX_CHARS \
            and "\x00" not in value:
        return value
    return None


def _name(item: Mapping[str, Any]) -> str | None:
    name = item.get("name")
    return name.strip() or None if isinstance(name, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _items(value: Any) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """The (id, item) pairs of an object keyed by id, in id order; what is not one is left
    out."""
    if not isinstance(value, dict):
        return
    for key in sorted(k for k in value if isinstance(k, str)):
        item = value[key]
        if _id(key) is not None and isinstance(item, dict):
            yield key, item


def _by_name(name: str | None, ident: str) -> tuple[str, str]:
    return ((name or ident).casefold(), ident)


def outputs(value: Any) -> list[Output]:
    """A call's structured outputs, by name (then id); an item that is not an object, or
    whose key is not an id, is left out."""
    found = [Output(id=key, name=_name(item), result=item.get("result"))
             for key, item in _items(value)]
    return sorted(found, key=lambda o: _by_name(o.name, o.id))


def scorecards(value: Any) -> list[Scorecard]:
    """A call's scorecards, by name (then id)."""
    found = []
    for key, item in _items(value):
        points = item.get("metricPoints")
        numbers = {k: _number(v) for k, v in (points.items() if isinstance(points, dict)
                                              else ()) if isinstance(k, str)}
        found.append(Scorecard(
            id=key, name=_name(item), score=_number(item.get("score")),
            score_normalized=_number(item.get("scoreNormalized")),
            metric_points={k: n for k, n in numbers.items() if n is not None}))
    return sorted(found, key=lambda s: _by_name(s.name, s.id))


def _score(value: Any) -> Decimal | None:
    number = _number(value)
    if number is None:
        return None
    try:
        score = Decimal(str(number)).quantize(_SCORE_QUANTUM, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None
    return score if abs(score) < _SCORE_LIMIT else None


def success_signals(structured_outputs: Any, scorecard_items: Any) -> list[Signal]:
    """What a call says about success: each output whose result is a boolean (1 or 0), and
    each scorecard with a numeric `scoreNormalized` (to two places). Other outputs (text,
    numbers, objects) say nothing here; a scorecard grades the numeric ones."""
    signals = [Signal("output", key, Decimal(int(item["result"])))
               for key, item in _items(structured_outputs)
               if isinstance(item.get("result"), bool)]
    for key, item in _items(scorecard_items):
        score = _score(item.get("scoreNormalized"))
        if score is not None:
            signals.append(Signal("scorecard", key, score))
    return signals


def passes(signal_value: Decimal, kind: SignalKind, pass_mark: Decimal | None) -> bool:
    """Whether a source's value counts as success: a boolean output when true, a scorecard
    when its normalized score is at or above the pass mark."""
    if kind == "output":
        return signal_value >= 1
    return pass_mark is not None and signal_value >= pass_mark


# -- a lead's name and email ---------------------------------------------------------------

# An output's name (or an object result's key) is compared with every character that is not
# a letter or a digit removed, case-insensitively: "Customer Name", "customer_name" and
# "customerName" are all "customername".
NAME_LABELS = frozenset({"name", "fullname", "customername", "callername", "contactname",
                         "leadname"})
EMAIL_LABELS = frozenset({"email", "emailaddress", "customeremail", "calleremail",
                          "contactemail", "leademail"})
# What an extraction answers when the caller did not say: not a name.
_PLACEHOLDERS = frozenset({"", "unknown", "none", "null", "n/a", "na", "not provided",
                           "not given", "not mentioned", "-"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NAME_MAX_CHARS = 200
_EMAIL_MAX_CHARS = 320


def _label(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


def _as_name(value: Any) -> str | None:
    if not isinstance(value, str) or "\x00" in value:
        return None
    text = " ".join(value.split())
    return text if text.casefold() not in _PLACEHOLDERS and len(text) <= _NAME_MAX_CHARS \
        else None


def _as_email(value: Any) -> str | None:
    if not isinstance(value, str) or "\x00" in value:
        return None
    text = value.strip()
    return text if _EMAIL.match(text) and len(text) <= _EMAIL_MAX_CHARS else None


def _carried(items: list[Output], labels: frozenset[str],
             read: Callable[[Any], str | None]) -> str | None:
    """The first value an output named for it carries, else the first an object result
    carries under such a key (outputs in id order)."""
    for item in items:
        if item.name is not None and _label(item.name) in labels:
            value = read(item.result)
            if value is not None:
                return value
    for item in items:
        if isinstance(item.result, dict):
            for key in sorted(k for k in item.result if isinstance(k, str)):
                if _label(key) in labels:
                    value = read(item.result[key])
                    if value is not None:
                        return value
    return None


def contact(structured_outputs: Any) -> Contact:
    """The lead's name and email the call's structured outputs carry.

    The rule: an output whose *name* is one of `NAME_LABELS` (or `EMAIL_LABELS`), compared
    without case, spaces or punctuation ("Customer Name", "customer_email"), and whose
    result is text, gives it; otherwise an output whose result is an *object* with such a
    key (`{"name": ..., "email": ...}`, `{"customerName": ...}`). Among several, the first
    by output id, then by key. A name is text other than a placeholder ("unknown", "n/a",
    ...), whitespace collapsed, at most 200 characters; an email looks like one
    (`local@domain.tld`, no spaces, at most 320 characters). Anything else carries neither.
    """
    items = sorted(outputs(structured_outputs), key=lambda o: o.id)
    return Contact(name=_carried(items, NAME_LABELS, _as_name),
                   email=_carried(items, EMAIL_LABELS, _as_email))
