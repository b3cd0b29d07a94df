"""What an export of calls or leads holds, and how each row is written as CSV or NDJSON.
Pure: the rows come from the repository's cursor, the bytes go to a streaming response.

CSV cells a spreadsheet would run as a formula (OWASP "CSV injection": a text starting with
`=`, `+`, `-`, `@`, a tab or a carriage return) get a leading `'`, so a caller's name like
`=HYPERLINK(...)` stays text. Numeric columns hold numbers read from numeric columns, never
text, so `-1.5` there stays a number. NDJSON is data for programs: values as they are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from api.params import CALL_TYPE_DIRECTIONS
from calltrail_common.agencies import CostView

Format = Literal["csv", "ndjson"]
Kind = Literal["calls", "leads"]
NDJSON = "application/x-ndjson"
MEDIA_TYPES: dict[Format, str] = {"csv": "text/csv; charset=utf-8", "ndjson": NDJSON}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

CALL_COLUMNS = ("id", "createdAt", "startedAt", "endedAt", "direction", "status",
                "endedReason", "durationSeconds", "cost", "customerNumber", "customerName",
                "assistantId", "phoneNumberId", "leadId", "summary", "successEvaluation")
LEAD_COLUMNS = ("id", "phoneNumber", "name", "email", "firstCallAt", "lastCallAt",
                "callCount", "createdAt")
COLUMNS: dict[Kind, tuple[str, ...]] = {"calls": CALL_COLUMNS, "leads": LEAD_COLUMNS}
# Columns whose values are numbers (never text), written as numbers in both formats.
NUMERIC = frozenset({"durationSeconds", "cost", "callCount"})

Value = str | int | float | None


@dataclass(frozen=True)
class CallFilters:
    """The filters of `GET /api/calls`, parsed; what the audit log records of an export."""
    call_type: str | None = None
    status: str | None = None
    lead_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def audited(self) -> dict[str, str]:
        named = {"direction": None if self.call_type is None
                 else CALL_TYPE_DIRECTIONS.get(self.call_type, self.call_type),
                 "status": self.status, "leadId": self.lead_id,
                 "from": instant(self.created_from), "to": instant(self.created_to)}
        return {k: v for k, v in named.items() if v is not None}


def negotiate(accept: str | None) -> Format:
    """NDJSON when the caller's Accept names it; CSV otherwise (the default, also for
    `*/*`, `text/csv` or anything unknown)."""
    if accept is None:
        return "csv"
    media = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "ndjson" if NDJSON in media else "csv"


def filename(kind: Kind, fmt: Format, today: date) -> str:
    return f"{kind}-{today.isoformat()}.{fmt}"


def content_disposition(kind: Kind, fmt: Format, today: date) -> str:
    return f'attachment; filename="{filename(kind, fmt, today)}"'


def instant(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z` (an instant without an offset is read as UTC)."""
    if value is None:
        return None
    at = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return at.isoformat().replace("+00:00", "Z")


def _number(value: Decimal | int | float | None) -> int | float | None:
    if value is None or isinstance(value, int):
        return value
    return float(value)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def call_record(row: Mapping[str, Any], costs: CostView) -> dict[str, Value]:
    """A call as exported (the columns of CALL_COLUMNS); its cost as the viewer sees it
    (`CostView.primary`: a client's people and tokens see the marked-up cost)."""
    cost = _number(row["cost"])
    if cost is not None and costs.marked_up:
        cost = costs.primary(cost)
    call_type = row["direction"]
    return {
        "id": row["id"], "createdAt": instant(row["created_at"]),
        "startedAt": instant(row["started_at"]), "endedAt": instant(row["ended_at"]),
        "direction": None if call_type is None
        else CALL_TYPE_DIRECTIONS.get(call_type, call_type),
        "status": row["status"], "endedReason": row["ended_reason"],
        "durationSeconds": _number(row["duration_seconds"]), "cost": cost,
        "customerNumber": row["customer_number"], "customerName": row["customer_name"],
        "assistantId": row["assistant_id"], "phoneNumberId": row["phone_number_id"],
        "leadId": _text(row["lead_id"]), "summary": row["summary"],
        "successEvaluation": _text(row["success_evaluation"]),
    }


def lead_record(row: Mapping[str, Any]) -> dict[str, Value]:
    return {
        "id": _text(row["id"]), "phoneNumber": row["phone_number"], "name": row["name"],
        "email": row["email"], "firstCallAt": instant(row["first_call_at"]),
        "lastCallAt": instant(row["last_call_at"]), "callCount": _number(row["call_count"]),
        "createdAt": instant(row["created_at"]),
    }


def neutralized(text: str) -> str:
    """A text cell a spreadsheet shows as text: one a formula could start with gets `'`."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_cell(column: str, value: Value) -> str:
    if value is None:
        return ""
    if column in NUMERIC and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) else str(value)
    return neutralized(str(value))


def csv_header(kind: Kind) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(COLUMNS[kind])
    return out.getvalue().encode()


def csv_rows(columns: tuple[str, ...], records: Iterable[Mapping[str, Value]]) -> str:
    """Records as CSV lines (RFC 4180: CRLF, quoted when needed), in `columns`' order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for record in records:
        writer.writerow([csv_cell(c, record[c]) for c in columns])
    return out.getvalue()


def ndjson_rows(records: Iterable[Mapping[str, Value]]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def encode(kind: Kind, fmt: Format, records: list[dict[str, Value]]) -> bytes:
    """A batch of records in the format (CSV without its header: `csv_header`)."""
    if fmt == "ndjson":
        return ndjson_rows(records)
    return csv_rows(COLUMNS[kind], records).encode()
