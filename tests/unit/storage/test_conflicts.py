"""The recent-writes index: point and range writes against point and range reads, and pruning."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kelpie.storage.conflicts import ConflictIndex

KEYS = st.sampled_from([b"", b"a", b"a\x00", b"ab", b"b", b"c", b"\xff"])


def point(key: bytes) -> tuple[bytes, bytes]:
    return (key, key + b"\x00")


def test_points_and_ranges() -> None:
    index = ConflictIndex()
    index.add(5, [point(b"k")])
    index.add(7, [(b"m", b"p")])
    assert index.newest_conflict(4, [point(b"k")]) == 5
    assert index.newest_conflict(5, [point(b"k")]) is None
    assert index.newest_conflict(4, [(b"a", b"z")]) in (5, 7)
    assert index.newest_conflict(6, [point(b"n")]) == 7
    assert index.newest_conflict(6, [(b"p", b"q")]) is None  # ranges are half-open
    assert index.newest_conflict(0, [(b"j", b"k")]) is None
    index.prune(5)
    assert index.newest_conflict(0, [point(b"k")]) is None
    assert index.newest_conflict(0, [point(b"n")]) == 7
    index.prune(7)
    assert len(index) == 0


@settings(max_examples=300, deadline=None)
@given(
    writes=st.lists(st.tuples(KEYS, KEYS, st.booleans()), max_size=12),
    reads=st.lists(st.tuples(KEYS, KEYS), min_size=1, max_size=3),
    read_version=st.integers(0, 12),
    pruned=st.integers(0, 12),
)
def test_matches_a_brute_force_scan(
    writes: list[tuple[bytes, bytes, bool]],
    reads: list[tuple[bytes, bytes]],
    read_version: int,
    pruned: int,
) -> None:
    index = ConflictIndex()
    log = []
    for version, (begin, end, as_point) in enumerate(writes, start=1):
        write = point(begin) if as_point else (min(begin, end), max(begin, end) + b"\x00")
        index.add(version, [write])
        log.append((version, write))
    index.prune(pruned)
    read_ranges = [
        point(begin) if begin == end else (min(begin, end), max(begin, end)) for begin, end in reads
    ]
    expected = {
        version
        for version, (write_begin, write_end) in log
        if version > max(read_version, pruned)
        and any(begin < write_end and write_begin < end for begin, end in read_ranges)
    }
    found = index.newest_conflict(read_version, read_ranges)
    if expected:
        assert found in expected
    else:
        assert found is None


def test_many_points_stay_sorted() -> None:
    index = ConflictIndex()
    keys = [bytes([random.Random(3).randrange(256)]) + b"%d" % number for number in range(500)]
    for version, key in enumerate(keys, start=1):
        index.add(version, [point(key)])
    index.prune(250)
    for version, key in enumerate(keys, start=1):
        assert (index.newest_conflict(0, [point(key)]) is not None) == (version > 250)
