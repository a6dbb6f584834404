"""Group-commit planning: in-batch conflicts, history conflicts, and the folded effect."""

from __future__ import annotations

from kelpie.errors import Conflict, TransactionTooOld
from kelpie.storage.backend import CommitRequest
from kelpie.storage.batch import plan_batch
from kelpie.storage.conflicts import ConflictIndex


def request(
    *,
    read_version: int | None = None,
    reads: tuple[tuple[bytes, bytes], ...] = (),
    cleared: tuple[tuple[bytes, bytes], ...] = (),
    writes: tuple[tuple[bytes, bytes | None], ...] = (),
) -> CommitRequest:
    write_ranges = cleared + tuple((key, key + b"\x00") for key, _ in writes)
    return CommitRequest(
        read_version=read_version,
        read_conflict_ranges=reads,
        write_conflict_ranges=write_ranges,
        cleared_ranges=cleared,
        writes=writes,
        bytes_written=1,
    )


def test_a_later_request_that_read_an_earlier_ones_write_conflicts() -> None:
    first = request(read_version=10, reads=((b"k", b"k\x00"),), writes=((b"k", b"1"),))
    second = request(read_version=10, reads=((b"k", b"k\x00"),), writes=((b"k", b"2"),))
    blind = request(writes=((b"k", b"3"),))
    plan = plan_batch([first, second, blind], version=10, pruned_through_version=0, history=ConflictIndex())
    assert plan.outcomes[0] == 11
    assert isinstance(plan.outcomes[1], Conflict)
    assert plan.outcomes[2] == 12
    assert plan.writes == {b"k": b"3"}
    assert plan.version == 12
    assert [entry[0] for entry in plan.conflict_log] == [11, 12]


def test_history_conflicts_and_too_old_read_versions_are_refused() -> None:
    stale = request(read_version=3, reads=((b"a", b"b"),), writes=((b"x", b"1"),))
    overwritten = request(read_version=9, reads=((b"a", b"b"),), writes=((b"y", b"1"),))
    fine = request(read_version=9, reads=((b"c", b"d"),), writes=((b"z", b"1"),))
    history = ConflictIndex()
    history.add(10, [(b"a5", b"a5\x00")])  # a commit at version 10 wrote inside [a, b)
    plan = plan_batch([stale, overwritten, fine], version=10, pruned_through_version=5, history=history)
    assert isinstance(plan.outcomes[0], TransactionTooOld)
    assert isinstance(plan.outcomes[1], Conflict)
    assert "version 10" in str(plan.outcomes[1])
    assert plan.outcomes[2] == 11
    assert plan.writes == {b"z": b"1"}


def test_effects_fold_in_commit_order() -> None:
    sets = request(writes=((b"a1", b"x"), (b"b", b"y")))
    clears = request(cleared=((b"a", b"b"),), writes=((b"a5", b"after-clear"),))
    deletes = request(writes=((b"b", None),))
    plan = plan_batch([sets, clears, deletes], version=0, pruned_through_version=0, history=ConflictIndex())
    assert plan.outcomes == [1, 2, 3]
    assert plan.cleared_ranges == [(b"a", b"b")]
    assert plan.upserts == [(b"a5", b"after-clear")]
    assert plan.deletions == [b"b"]
