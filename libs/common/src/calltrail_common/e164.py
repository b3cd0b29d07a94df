"""Phone numbers as E.164 ("+14155550123"): the one normalization, with `phonenumbers`
(Google's libphonenumber). A lead's key, a registered number and a dialled number are all
written by `to_e164`, so they compare equal however Vapi or an operator wrote them. Pure.

A number is read as written in international form: a leading "+", then what libphonenumber
finds a possible number in ("+1 (415) 555-0123" is "+14155550123"). Anything else before
the "+" ("tel:", a SIP URI, "anonymous") is not a number. `bare_digits` also reads digits
alone ("14155550123", spaces and dashes allowed) as international: a caller's number as
Vapi may report it. Numbers registered to an organization (by the CLI or from an account)
must carry their "+".
"""

from __future__ import annotations

import functools

import phonenumbers


def to_e164(raw: object, *, bare_digits: bool = False) -> str | None:
    """`raw` as E.164, or None when it is not a phone number."""
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text.startswith("+"):
        if not bare_digits:
            return None
        digits = "".join(ch for ch in text if ch.isdigit())
        if not digits or len(digits) != len(text.replace(" ", "").replace("-", "")):
            return None
        text = "+" + digits
    return _international(text)


# Callers come back and every event of a call repeats its numbers: parsing is the costly part.
@functools.lru_cache(maxsize=8192)
def _international(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
