"""What a Vapi account calls its assistants and phone numbers, read from its lists (`GET
/assistant`, `GET /phone-number`), so pages can say "Receptionist" where a call holds a
UUID (decision 43). No I/O here.

- An assistant's name is its `name`; one without a name has none (the page shows its id).
- A phone number's name is its `name`, else its number, else its SIP URI: what Vapi's own
  dashboard shows for it.
- Names are trimmed and cut to `MAX_NAME_LENGTH` characters; an item without a string id,
  or without anything to show, is skipped; an id listed twice keeps its first name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_NAME_LENGTH = 200  # Vapi caps an assistant's name at 40; a bound, whatever it sends

Kind = Literal["assistant", "phone_number"]


@dataclass(frozen=True, slots=True)
class VapiName:
    kind: Kind
    vapi_id: str
    name: str


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())[:MAX_NAME_LENGTH]
    return text or None


def _names(kind: Kind, items: Iterable[Mapping[str, Any]], fields: tuple[str, ...]
           ) -> list[VapiName]:
    names: dict[str, VapiName] = {}
    for item in items:
        vapi_id = item.get("id")
        if not isinstance(vapi_id, str) or not vapi_id.strip() or vapi_id in names:
            continue
        name = next((text for text in (_text(item.get(f)) for f in fields) if text), None)
        if name is not None:
            names[vapi_id] = VapiName(kind, vapi_id, name)
    return list(names.values())


def assistant_names(items: Iterable[Mapping[str, Any]]) -> list[VapiName]:
    return _names("assistant", items, ("name",))


def phone_number_names(items: Iterable[Mapping[str, Any]]) -> list[VapiName]:
    return _names("phone_number", items, ("name", "number", "sipUri"))
