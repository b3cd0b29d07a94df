"""A Vapi transcript as a conversation. Pure.

Vapi's `artifact.transcript` is plain text, one turn per line, each starting with its
speaker: `AI: ...` for the assistant, `User: ...` for the caller. A line without a speaker
continues the turn before it.
"""

from __future__ import annotations

from dataclasses import dataclass

_SPEAKERS = {"ai": "assistant", "assistant": "assistant", "bot": "assistant",
             "user": "customer", "customer": "customer", "caller": "customer"}


@dataclass(frozen=True)
class Turn:
    speaker: str  # assistant | customer
    text: str


def conversation(transcript: str | None) -> list[Turn]:
    turns: list[Turn] = []
    for raw in (transcript or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        head, sep, rest = line.partition(":")
        speaker = _SPEAKERS.get(head.strip().lower()) if sep else None
        if speaker is not None:
            turns.append(Turn(speaker, rest.strip()))
        elif turns:
            turns[-1] = Turn(turns[-1].speaker, f"{turns[-1].text} {line}")
        else:
            turns.append(Turn("customer", line))
    return [t for t in turns if t.text]
