"""The Vapi sample payloads every generator starts from (the repository's own copy of
`shared/vapi-samples`, in tests/fixtures/vapi: one JSON file per webhook, and one item of
`GET /call`), and instants written as Vapi writes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# libs/testkit/src/calltrail_testkit/samples.py: the repository is four folders up.
REPO_ROOT = Path(__file__).resolve().parents[4]
SAMPLES_DIR = REPO_ROOT / "tests" / "fixtures" / "vapi"


def sample(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads((SAMPLES_DIR / f"{name}.json").read_text())
    return parsed


def sample_bytes(name: str) -> bytes:
    return (SAMPLES_DIR / f"{name}.json").read_bytes()


def webhook_samples() -> list[str]:
    """The names of the webhook samples (every sample but the `GET /call` item)."""
    return sorted(p.stem for p in SAMPLES_DIR.glob("*.json") if p.stem != "api-get-call-item")


def format_instant(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and Z, as Vapi writes it."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
