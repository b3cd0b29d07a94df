"""Phone numbers as E.164, the key of a lead (with `phonenumbers`, Google's libphonenumber)."""

from __future__ import annotations

import functools

import phonenumbers


# Callers come back and every event of a call repeats its numbers: parsing is the costly part.
@functools.lru_cache(maxsize=8192)
def to_e164(raw: str | None) -> str | None:
    """`raw` as E.164 ("+14155550123"), or None when it is not a phone number.

    Vapi sends E.164 already; formatted variants ("+1 (415) 555-0123") normalize to the
    same key. Without a leading "+" there is no country to assume, so digits-only input is
    read as international; SIP URIs, "anonymous" and the like are not numbers.
    """
    if not raw:
        return None
    text = raw.strip()
    if not text.startswith("+"):
        digits = "".join(ch for ch in text if ch.isdigit())
        if not digits or len(digits) != len(text.replace(" ", "").replace("-", "")):
            return None
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
