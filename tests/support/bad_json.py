"""Hypothesis strategies for bad input: arbitrary JSON, and Vapi's real samples with any field
replaced by a value of any JSON type, as the raw bytes a producer could publish.

Values Python's `json` cannot write (deep nesting past the recursion limit, lone surrogate
escapes, NaN, numbers past a double, bytes that are not UTF-8) go in as markers and are
swapped for their raw bytes after encoding.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from tests.support.samples import sample, webhook_samples

_ODD_CHARS = (
    "\x00", "\x01", "\x7f", "\u200f", "\u202e", "\u200b", "\ufeff", "\ud800", "\udfff",
    "\U0001f600", "\U0010ffff", "\U0001d518", "\u0301", "\u0661", "\u00b2", "\n", '"', "\\",
    "+", ":", " ",
)

# Raw JSON tokens, each valid or not for orjson; referenced from documents by marker.
RAW_TOKENS: tuple[bytes, ...] = (
    b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" * 500,
    b"18446744073709551616", b"-9223372036854775809", b"1e308", b"5e-324", b"-0.0",
    b'"\\ud800"', b'"\\udc00\\ud800"', b'"a\\u0000b"', b'"\\u0000"', b'"\xff\xfe"',
    b'"\xc3("', b'"\xed\xa0\x80"',  # not UTF-8: a truncated sequence, a UTF-8 surrogate
    *(b"[" * n + b"]" * n for n in (1, 254, 255, 256, 1000, 1023, 1024, 1025, 3000)),
    *(b'{"a":' * n + b'"x"' + b"}" * n for n in (254, 255, 300, 1100)),
)
VALID_RAW_TOKENS = (  # orjson reads these: odd values that reach the parser's rules
    b"18446744073709551616", b"-9223372036854775809", b"1e308", b"5e-324", b"-0.0",
    b'"a\\u0000b"', b'"\\u0000"',
    *(b"[" * n + b"]" * n for n in (254, 255, 256, 1000)),  # the document adds a few levels
    *(b'{"a":' * n + b'"x"' + b"}" * n for n in (254, 255, 300)),
)
_MARKER = "@@raw-token-{}@@"

NUMBERS_AS_STRINGS = (
    "0", "-0", "1e308", "-1e308", "1e999999", "1e-999999", "4.2e-400", "NaN", "-Infinity",
    "sNaN", "0x1F", "1_000", " 42 ", "0.30000000000000004",
    "123456789012345678901234567890.123456789", "0." + "1" * 40, "1" * 5000, "+14155550123",
    "\u0661\u0662\u0663", "12\x0034",
)
TIMESTAMPS = (
    0, -1, -62135596800001, -62135596800000, 253402300799999, 253402300800000, 2**63,
    -(2**63), 2**64 + 1, 10**30, 1.5, -1e308, 1e308,
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0000-01-01", "2026-13-45",
    "2026-11-03T15:04:05.000Z", "2026-11-03", "2026-11-03T15:04:05+14:00", "2026-11-03T25:00",
    "-2026-11-03", "2026-11-03T15:04:05\x00Z", "1793718246000",
)


def odd_text(max_size: int = 12, *, valid_only: bool = False) -> st.SearchStrategy[str]:
    odd = [c for c in _ODD_CHARS if not (valid_only and "\ud800" <= c <= "\udfff")]
    anything = st.characters(codec="utf-8") if valid_only else st.characters()
    return st.text(st.one_of(st.sampled_from(odd), anything), max_size=max_size)


huge_text = st.builds(lambda piece, n: piece * n,
                      st.sampled_from(["a", "\x00", "\U0001f600", "9", " ", "\u202e"]),
                      st.sampled_from([100_000, 250_000]))


def raw_token(tokens: Sequence[bytes] = RAW_TOKENS) -> st.SearchStrategy[str]:
    return st.sampled_from([_MARKER.format(RAW_TOKENS.index(t)) for t in tokens])


def json_scalars(valid_only: bool = False) -> st.SearchStrategy[Any]:
    tokens = VALID_RAW_TOKENS if valid_only else RAW_TOKENS
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(-(2**80), 2**80),
        st.floats(allow_nan=not valid_only, allow_infinity=not valid_only),
        odd_text(valid_only=valid_only), st.sampled_from(NUMBERS_AS_STRINGS),
        st.sampled_from(TIMESTAMPS), raw_token(tokens),
    )


def json_values(valid_only: bool = False) -> st.SearchStrategy[Any]:
    """Any JSON value, of any shape; unless `valid_only`, now and then one orjson refuses
    (NaN, a lone surrogate, a number past a double, nesting past 1024, bytes not UTF-8)."""
    return st.recursive(
        json_scalars(valid_only),
        lambda children: st.one_of(st.lists(children, max_size=4),
                                   st.dictionaries(odd_text(6, valid_only=valid_only),
                                                   children, max_size=4)),
        max_leaves=12)


def field_values(valid_only: bool = False) -> st.SearchStrategy[Any]:
    """What may stand where Vapi puts a field: anything, now and then very large."""
    tokens = VALID_RAW_TOKENS if valid_only else RAW_TOKENS
    return st.one_of(json_values(valid_only), huge_text, raw_token(tokens))


def encode(document: Any, *, ascii_only: bool = True) -> bytes:
    """`document` as raw JSON bytes, markers replaced by their raw tokens.

    `json` writes NaN/Infinity as literals, integers of any size, and a lone surrogate as an
    escape (`ascii_only`) or as the bytes UTF-8 forbids (not `ascii_only`).
    """
    raw = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if b"@@raw-token-" in raw:
        for index, token in enumerate(RAW_TOKENS):
            raw = raw.replace(b'"' + _MARKER.format(index).encode() + b'"', token)
    return raw


SAMPLES = {name: sample(name) for name in webhook_samples()}
# Fields the parser reads, present in a sample or not.
PARSER_PATHS: tuple[tuple[Any, ...], ...] = (
    (), ("message",), ("message", "type"), ("message", "status"), ("message", "timestamp"),
    ("message", "call"), ("message", "call", "id"), ("message", "call", "type"),
    ("message", "call", "createdAt"), ("message", "call", "startedAt"),
    ("message", "call", "endedAt"), ("message", "call", "cost"),
    ("message", "call", "costBreakdown"), ("message", "call", "costs"),
    ("message", "call", "customer"), ("message", "call", "customer", "number"),
    ("message", "call", "customer", "name"), ("message", "call", "customer", "email"),
    ("message", "call", "phoneNumberId"), ("message", "call", "assistantId"),
    ("message", "call", "orgId"), ("message", "call", "metadata"),
    ("message", "call", "metadata", "orgId"), ("message", "call", "assistantOverrides"),
    ("message", "call", "assistantOverrides", "metadata", "organizationId"),
    ("message", "assistant", "metadata"), ("message", "assistant", "metadata", "orgId"),
    ("message", "customer", "number"), ("message", "phoneNumber", "number"),
    ("message", "endedReason"), ("message", "startedAt"), ("message", "endedAt"),
    ("message", "cost"), ("message", "costBreakdown"), ("message", "costs"),
    ("message", "transcript"), ("message", "summary"), ("message", "structuredData"),
    ("message", "successEvaluation"), ("message", "recordingUrl"),
    ("message", "stereoRecordingUrl"), ("message", "artifact"),
    ("message", "artifact", "transcript"), ("message", "artifact", "recordingUrl"),
    ("message", "artifact", "stereoRecordingUrl"),
    ("message", "artifact", "recording", "mono", "combinedUrl"),
    ("message", "artifact", "recording", "stereoUrl"), ("message", "analysis"),
    ("message", "analysis", "summary"), ("message", "analysis", "structuredData"),
    ("message", "analysis", "structuredData", "name"),
    ("message", "analysis", "structuredData", "email"),
    ("message", "analysis", "successEvaluation"),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def replace_at(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`document` with `value` at `path`, creating objects on the way; the new document."""
    if not path:
        return value
    if not isinstance(document, dict | list):
        document = {}
    node = document
    for key in path[:-1]:
        if isinstance(node, list):
            if not (isinstance(key, int) and key < len(node)):
                return document
            if not isinstance(node[key], dict | list):
                node[key] = {}
            node = node[key]
        else:
            child = node.get(key)
            if not isinstance(child, dict | list):
                child = node[key] = {}
            node = child
    last = path[-1]
    if isinstance(node, dict) or (isinstance(last, int) and last < len(node)):
        node[last] = value
    return document


_DELETE = object()


@st.composite
def vapi_documents(draw, valid_only: bool = False, max_changes: int = 4) -> Any:
    """A real Vapi sample with up to `max_changes` fields replaced by anything, or removed."""
    document = copy.deepcopy(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))])
    paths = list(dict.fromkeys([*_paths(document), *PARSER_PATHS]))
    for _ in range(draw(st.integers(1, max_changes))):
        path = draw(st.sampled_from(paths))
        value = draw(st.one_of(st.just(_DELETE), field_values(valid_only)))
        if value is _DELETE:
            parent = document
            for key in path[:-1]:
                parent = parent.get(key) if isinstance(parent, dict) else None
            if path and isinstance(parent, dict):
                parent.pop(path[-1], None)
        else:
            document = replace_at(document, path, value)
    return document


@st.composite
def bodies(draw) -> bytes:
    """Raw bytes a producer could publish: mostly Vapi-shaped, also any JSON or no JSON."""
    kind = draw(st.sampled_from(["vapi", "vapi", "vapi", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    document = draw(vapi_documents() if kind == "vapi" else json_values())
    return encode(document, ascii_only=draw(st.booleans()))
