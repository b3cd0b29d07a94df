"""What every `calltrail` command shares: its JSON on standard output, ids read from its
arguments, and the one error a command raises to exit non-zero with one line."""

from __future__ import annotations

import sys
import uuid

import orjson


class CommandError(Exception):
    """A command could not do what was asked; the message is shown as is, on one line."""


def print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def parse_id(value: str, what: str) -> uuid.UUID:
    """`value` as an id; CommandError naming the argument (`what`) otherwise."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"{what} is not a valid id: {value!r}") from None
