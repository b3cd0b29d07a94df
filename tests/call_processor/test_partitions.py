"""Sharing the partition queues out among the processor replicas alive (a pure rule)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from call_processor.partitions import partitions_of, share_out

PARTITIONS = 16
members = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=24, unique=True)


def owners(shares: dict[str, frozenset[int]]) -> dict[int, str]:
    return {partition: member for member, parts in shares.items() for partition in parts}


@given(members=members, partitions=st.integers(1, 64))
def test_every_partition_has_one_owner_and_shares_differ_by_one_at_most(
        members: list[str], partitions: int) -> None:
    shares = share_out(partitions, members)
    assert set(shares) == set(members)
    every = [p for parts in shares.values() for p in parts]
    assert sorted(every) == list(range(partitions))  # each exactly once
    sizes = [len(parts) for parts in shares.values()]
    assert max(sizes) - min(sizes) <= 1


@given(members=members, data=st.data())
def test_every_replica_computes_the_same_answer_whatever_order_it_read_the_members_in(
        members: list[str], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(members))
    assert share_out(PARTITIONS, shuffled) == share_out(PARTITIONS, members)
    for member in members:
        assert partitions_of(member, PARTITIONS, shuffled) == share_out(PARTITIONS,
                                                                        members)[member]


@given(members=members, newcomer=st.text(min_size=1, max_size=20))
def test_a_replica_joining_takes_its_share_and_moves_few_others(
        members: list[str], newcomer: str) -> None:
    if newcomer in members:
        return
    before = owners(share_out(PARTITIONS, members))
    after_shares = share_out(PARTITIONS, [*members, newcomer])
    after = owners(after_shares)
    moved_between_others = sum(before[p] != after[p] and after[p] != newcomer
                               for p in range(PARTITIONS))
    # (Owner = partition mod replicas would move about three quarters of them.)
    assert moved_between_others <= 7
    assert len(after_shares[newcomer]) >= PARTITIONS // (len(members) + 1)


def test_more_replicas_than_partitions_leaves_some_with_none() -> None:
    shares = share_out(4, [f"r{i}" for i in range(6)])
    assert sorted(len(parts) for parts in shares.values()) == [0, 0, 1, 1, 1, 1]


def test_a_replica_not_yet_seen_by_the_others_counts_itself() -> None:
    assert partitions_of("me", PARTITIONS, []) == frozenset(range(PARTITIONS))
    assert len(partitions_of("me", PARTITIONS, ["other"])) == PARTITIONS // 2
