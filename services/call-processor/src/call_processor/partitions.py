"""Which processor replica consumes which partition queue: a pure rule over the live members.

Every replica computes the same answer from the same member list (read from Postgres,
`processor_members`), so no replica coordinates with another beyond renewing its own row:

- each partition has exactly one owner among the members, and the owners' shares differ by
  at most one partition (the first members in id order take the remainder);
- every (member, partition) pair has a random but fixed score (rendezvous hashing); taking
  the pairs from the highest score down, a partition goes to the member of the pair unless
  it has an owner already or the member's share is full. A member that joins takes the
  partitions it scores highest and the others mostly keep theirs (each move costs a short
  hand-over): no more than 7 of 16 change hands between the others (tests).

Two replicas that briefly disagree (one saw a member the other has not seen yet) may both
subscribe to a partition: the queue's single active consumer still gives its events to one
of them at a time, and the rules are order-free and idempotent in any case.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _rank(member: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{partition}:{member}".encode(), digest_size=8).digest()


def share_out(partitions: int, members: Sequence[str]) -> dict[str, frozenset[int]]:
    """Each member's partitions; every member gets an entry (possibly empty)."""
    ordered = sorted(set(members))
    if not ordered:
        return {}
    base, extra = divmod(partitions, len(ordered))
    room = {member: base + (index < extra) for index, member in enumerate(ordered)}
    owned: dict[str, set[int]] = {member: set() for member in ordered}
    taken: set[int] = set()
    pairs = sorted(((_rank(member, partition), partition, member)
                    for member in ordered for partition in range(partitions)), reverse=True)
    for _, partition, member in pairs:
        if partition not in taken and room[member]:
            room[member] -= 1
            owned[member].add(partition)
            taken.add(partition)
    return {member: frozenset(parts) for member, parts in owned.items()}


def partitions_of(member: str, partitions: int, members: Sequence[str]) -> frozenset[int]:
    """The partitions `member` consumes while `members` (which should include it) are live."""
    return share_out(partitions, [*members, member]).get(member, frozenset())
