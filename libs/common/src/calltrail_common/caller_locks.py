"""The advisory lock of a caller's number. Every transaction that changes what a lead is
computed from holds it (the call processor's batches: `call_processor.repository`; erasing
a caller: `calltrail_common.erasure`), so leads and the links to them change one
transaction at a time per caller."""

from __future__ import annotations

import hashlib

# The first key of pg_advisory_xact_lock(int, int); "ct" in front so no other user of the
# database picks the same by chance.
NUMBER_LOCK_CLASS = 0x63740002

LOCK_NUMBER = "SELECT pg_advisory_xact_lock($1, $2)"


def number_lock_key(number: str) -> int:
    """The lock key of a caller's number (two numbers may share one: they then wait on
    each other, which is all a collision costs)."""
    digest = hashlib.md5(number.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big", signed=True)
