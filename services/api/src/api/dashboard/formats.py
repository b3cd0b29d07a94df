"""How numbers and instants read on the pages (Jinja filters). Pure."""

from __future__ import annotations

from datetime import UTC, datetime


def money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.4f}" if 0 < abs(value) < 0.01 else f"${value:,.2f}"


def number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    minutes, secs = divmod(total, 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}:{secs:02d}"


def instant(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def moment(value: datetime | None) -> str:
    """An instant to the second: a sync's time, which changes within a minute."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def label(value: str | None) -> str:
    """A machine word as words: `customer-ended-call` → `Customer ended call`."""
    if not value:
        return "—"
    words = value.replace("-", " ").replace("_", " ")
    return words[:1].upper() + words[1:]


SHORT_ID_LENGTH = 8


def short_id(value: str | None) -> str:
    """A Vapi id without a known name, short enough for a table cell: its first characters
    (a UUID's first group) and an ellipsis; the page puts the whole id in its title."""
    if not value:
        return "—"
    return value if len(value) <= SHORT_ID_LENGTH + 1 else f"{value[:SHORT_ID_LENGTH]}…"


def caller(value: str | None) -> str:
    """A caller's number as people read it: an erased caller's pseudonym (decision 44)
    reads "Erased caller"."""
    if value is None:
        return "—"
    return "Erased caller" if value.startswith("erased:") else value


FILTERS = {"money": money, "number": number, "percent": percent, "duration": duration,
           "instant": instant, "moment": moment, "label": label, "short_id": short_id,
           "caller": caller}
