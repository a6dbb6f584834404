"""The storage contract, run identically against memory, SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from kelpie import limits
from kelpie.errors import (
    Conflict,
    InvalidArgument,
    InvalidKey,
    KeyTooLarge,
    RetryLimitExceeded,
    TransactionClosed,
    TransactionTimedOut,
    TransactionTooLarge,
    TransactionTooOld,
    ValueTooLarge,
)
from kelpie.storage import CommitRequest, Database, MemoryBackend, Transaction, open_database, transactional
from tests.conftest import ManualClock


async def second_handle(db: Database) -> Database:
    """Another handle on the same store, as a second process or node would have."""
    if isinstance(db.backend, MemoryBackend):
        return Database(MemoryBackend(db.backend.store), db.env, url=db.url)
    return await open_database(db.url, env=db.env)


async def put(db: Database, items: dict[bytes, bytes]) -> int | None:
    async with db.transaction() as tr:
        for key, value in items.items():
            tr.set(key, value)
    return tr.committed_version


async def everything(db: Database) -> list[tuple[bytes, bytes]]:
    async with db.transaction() as tr:
        return await tr.get_range(b"", b"\xff")


# --- reads and writes ---------------------------------------------------------------------------


async def test_set_get_clear(db: Database) -> None:
    await put(db, {b"a": b"1", b"b": b"2"})
    async with db.transaction() as tr:
        assert await tr.get(b"a") == b"1"
        assert await tr.get(b"missing") is None
        tr.clear(b"a")
    assert await everything(db) == [(b"b", b"2")]


async def test_reads_see_own_writes(db: Database) -> None:
    await put(db, {b"k1": b"old", b"k2": b"old", b"k3": b"old", b"k4": b"old"})
    async with db.transaction() as tr:
        tr.set(b"k1", b"new")
        assert await tr.get(b"k1") == b"new"
        tr.clear(b"k2")
        assert await tr.get(b"k2") is None
        tr.clear_range(b"k3", b"k5")
        assert await tr.get(b"k4") is None
        tr.set(b"k4", b"again")
        tr.set(b"k0", b"fresh")
        assert await tr.get_range(b"k", b"l") == [(b"k0", b"fresh"), (b"k1", b"new"), (b"k4", b"again")]
        assert await tr.get_range(b"k", b"l", reverse=True, limit=2) == [(b"k4", b"again"), (b"k1", b"new")]
    assert await everything(db) == [(b"k0", b"fresh"), (b"k1", b"new"), (b"k4", b"again")]


async def test_range_order_limit_reverse(db: Database) -> None:
    keys = [b"", b"\x00", b"\x00\x00", b"a", b"a\x00", b"a\xff", b"b", b"\xfe\xff"]
    await put(db, {key: key + b"!" for key in keys})
    async with db.transaction() as tr:
        rows = await tr.get_range(b"", b"\xff")
        assert [key for key, _ in rows] == sorted(keys)
        assert [key for key, _ in await tr.get_range(b"a", b"b")] == [b"a", b"a\x00", b"a\xff"]
        assert [key for key, _ in await tr.get_range(b"", b"\xff", limit=3)] == sorted(keys)[:3]
        assert [key for key, _ in await tr.get_range(b"", b"\xff", limit=3, reverse=True)] == sorted(
            keys, reverse=True
        )[:3]
        assert len(await tr.get_range(b"", b"\xff", limit=0)) == len(keys)
        assert await tr.get_range(b"b", b"a") == []
        assert await tr.get_range(b"a", b"a") == []


async def test_long_range_pages_through_batches_with_buffered_writes(db: Database) -> None:
    count = limits.RANGE_READ_BATCH_ROWS * 2 + 500
    keys = [b"r%06d" % number for number in range(count)]
    async with db.transaction() as tr:
        for key in keys:
            tr.set(key, b"v")
    async with db.transaction() as tr:
        tr.clear_range(b"r000100", b"r000200")
        tr.set(b"r001500x", b"inserted")
        rows = await tr.get_range(b"r", b"s")
        expected = [key for key in keys if not b"r000100" <= key < b"r000200"] + [b"r001500x"]
        assert [key for key, _ in rows] == sorted(expected)
        backwards = await tr.get_range(b"r", b"s", reverse=True, limit=1300)
        assert [key for key, _ in backwards] == sorted(expected, reverse=True)[:1300]


async def test_clear_range_then_commit(db: Database) -> None:
    await put(db, {b"x1": b"1", b"x2": b"2", b"x3": b"3", b"y": b"4"})
    async with db.transaction() as tr:
        tr.clear_range(b"x", b"y")
    assert await everything(db) == [(b"y", b"4")]


async def test_commit_versions_increase_and_read_only_commits_nothing(db: Database) -> None:
    versions = [await put(db, {b"v": bytes([number])}) for number in range(5)]
    assert all(isinstance(version, int) for version in versions)
    assert versions == sorted(versions)
    assert len(set(versions)) == 5
    async with db.transaction() as tr:
        assert await tr.get(b"v") == b"\x04"
        assert await tr.get_read_version() == versions[-1]
    assert tr.committed_version is None


async def test_data_survives_reopen(db: Database) -> None:
    """For memory:// the second handle shares the in-process store, as simulated nodes do."""
    await put(db, {b"persist": b"yes"})
    other = await second_handle(db)
    await db.close()
    try:
        assert await everything(other) == [(b"persist", b"yes")]
    finally:
        await other.close()


# --- conflicts ----------------------------------------------------------------------------------


async def test_read_write_conflict(db: Database) -> None:
    await put(db, {b"c": b"0"})
    first, second = db.transaction(), db.transaction()
    assert await first.get(b"c") == b"0"
    assert await second.get(b"c") == b"0"
    first.set(b"c", b"first")
    second.set(b"c", b"second")
    await first.commit()
    with pytest.raises(Conflict, match="version"):
        await second.commit()
    assert await everything(db) == [(b"c", b"first")]
    with pytest.raises(TransactionClosed):
        second.set(b"c", b"late")


async def test_blind_writes_and_snapshot_reads_do_not_conflict(db: Database) -> None:
    await put(db, {b"s": b"0"})
    first, second = db.transaction(), db.transaction()
    assert await first.get(b"s", snapshot=True) == b"0"
    assert await second.get(b"s", snapshot=True) == b"0"
    first.set(b"s", b"1")
    second.set(b"s", b"2")
    await first.commit()
    await second.commit()
    assert await everything(db) == [(b"s", b"2")]


async def test_snapshot_is_consistent_while_others_commit(db: Database) -> None:
    await put(db, {b"p": b"0", b"q": b"0"})
    reader = db.transaction()
    assert await reader.get(b"p") == b"0"
    await put(db, {b"p": b"1", b"q": b"1"})
    assert await reader.get(b"q") == b"0"  # same snapshot: the concurrent commit is invisible
    assert await reader.get_range(b"p", b"r") == [(b"p", b"0"), (b"q", b"0")]
    await reader.commit()  # read-only: commits nothing, cannot conflict


async def test_range_read_conflicts_with_insert_into_range(db: Database) -> None:
    await put(db, {b"m1": b"1", b"m3": b"3"})
    scanner = db.transaction()
    assert len(await scanner.get_range(b"m", b"n")) == 2
    scanner.set(b"summary", b"2 items")
    await put(db, {b"m2": b"phantom"})
    with pytest.raises(Conflict):
        await scanner.commit()


async def test_limited_range_read_conflicts_only_with_what_it_saw(db: Database) -> None:
    await put(db, {b"l1": b"1", b"l2": b"2", b"l3": b"3"})
    scanner = db.transaction()
    assert await scanner.get_range(b"l", b"m", limit=1) == [(b"l1", b"1")]
    scanner.set(b"first", b"l1")
    await put(db, {b"l3": b"changed"})  # beyond what the limited read saw
    await scanner.commit()
    again = db.transaction()
    assert await again.get_range(b"l", b"m", limit=1, reverse=True) == [(b"l3", b"changed")]
    again.set(b"last", b"l3")
    await put(db, {b"l1": b"changed"})  # beyond what the reverse read saw
    await again.commit()


async def test_limited_range_read_conflicts_with_a_change_to_the_last_key_it_saw(db: Database) -> None:
    await put(db, {b"e1": b"1", b"e2": b"2"})
    forward, backward = db.transaction(), db.transaction()
    assert await forward.get_range(b"e", b"f", limit=1) == [(b"e1", b"1")]
    assert await backward.get_range(b"e", b"f", limit=1, reverse=True) == [(b"e2", b"2")]
    forward.set(b"seen", b"e1")
    backward.set(b"seen", b"e2")
    await put(db, {b"e1": b"changed", b"e2": b"changed"})
    with pytest.raises(Conflict):
        await forward.commit()
    with pytest.raises(Conflict):
        await backward.commit()


async def test_conflicts_across_handles(db: Database) -> None:
    other = await second_handle(db)
    try:
        await put(db, {b"shared": b"0"})
        mine, theirs = db.transaction(), other.transaction()
        await mine.get(b"shared")
        await theirs.get(b"shared")
        mine.set(b"shared", b"mine")
        theirs.set(b"shared", b"theirs")
        await theirs.commit()
        with pytest.raises(Conflict):
            await mine.commit()
    finally:
        await other.close()


async def test_transactional_retries_until_every_increment_lands(db: Database) -> None:
    other = await second_handle(db)

    async def increment(tr: Transaction) -> None:
        current = int(await tr.get(b"counter") or b"0")
        tr.set(b"counter", str(current + 1).encode())

    try:
        await asyncio.gather(*(transactional(handle, increment) for handle in [db, other] * 20))
        async with db.transaction() as tr:
            assert await tr.get(b"counter") == b"40"
    finally:
        await other.close()


async def test_transactional_gives_up_after_the_attempt_limit(db: Database) -> None:
    attempts = 0

    async def always_conflicts(tr: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        await tr.get(b"hot")
        await put(db, {b"hot": str(attempts).encode()})
        tr.set(b"hot", b"never")

    with pytest.raises(RetryLimitExceeded) as caught:
        await transactional(db, always_conflicts, attempts_limit=3)
    assert attempts == 3
    assert isinstance(caught.value.last_error, Conflict)
    with pytest.raises(InvalidArgument, match="attempts_limit"):
        await transactional(db, always_conflicts, attempts_limit=0)


async def test_a_read_version_outside_the_conflict_window_is_refused(
    db: Database, manual_clock: ManualClock
) -> None:
    async with db.transaction() as tr:
        stale_version = await tr.get_read_version()
    await put(db, {b"w": b"0"})  # the first commit after the stale read version
    manual_clock.advance(limits.CONFLICT_WINDOW_S + 5)
    await put(db, {b"w": b"1"})  # prunes the history behind the window, the first commit included
    await put(db, {b"w": b"2"})
    request = CommitRequest(
        read_version=stale_version,
        read_conflict_ranges=((b"unrelated", b"unrelated\x00"),),
        write_conflict_ranges=((b"z", b"z\x00"),),
        cleared_ranges=(),
        writes=((b"z", b"1"),),
        bytes_written=2,
    )
    with pytest.raises(TransactionTooOld, match=str(stale_version)):
        await db.backend.commit(request)
    assert await everything(db) == [(b"w", b"2")]


# --- limits and bad input -----------------------------------------------------------------------


async def test_key_and_value_limits_are_exact(db: Database) -> None:
    big_key = b"k" * limits.KEY_BYTES_LIMIT
    big_value = b"v" * limits.VALUE_BYTES_LIMIT
    await put(db, {big_key: big_value})
    async with db.transaction() as tr:
        assert await tr.get(big_key) == big_value
        with pytest.raises(KeyTooLarge, match="10001 bytes"):
            tr.set(big_key + b"k", b"x")
        with pytest.raises(KeyTooLarge):
            await tr.get(big_key + b"k")
        with pytest.raises(ValueTooLarge, match="100001 bytes"):
            tr.set(b"ok", big_value + b"v")
    assert await everything(db) == [(big_key, big_value)]


@pytest.mark.parametrize("bad_key", ["text", bytearray(b"ba"), 7, None, memoryview(b"mv")])
async def test_non_bytes_keys_are_refused_by_name(db: Database, bad_key: object) -> None:
    async with db.transaction() as tr:
        with pytest.raises(InvalidKey, match=type(bad_key).__name__):
            tr.set(bad_key, b"v")  # type: ignore[arg-type]
        with pytest.raises(InvalidKey):
            await tr.get(bad_key)  # type: ignore[arg-type]
        with pytest.raises(InvalidKey):
            await tr.get_range(bad_key, b"z")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="str"):
            tr.set(b"k", "not bytes")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="limit"):
            await tr.get_range(b"a", b"b", limit=-1)
    assert await everything(db) == []


async def test_transaction_size_limit_writes_nothing(db: Database) -> None:
    value = b"x" * 90_000
    tr = db.transaction()
    with pytest.raises(TransactionTooLarge, match="10000000"):
        for number in range(200):
            tr.set(b"big%04d" % number, value)
    with pytest.raises(TransactionClosed):
        await tr.commit()
    await tr.cancel()
    assert await everything(db) == []


async def test_transaction_time_limit(db: Database, manual_clock: ManualClock) -> None:
    tr = db.transaction()
    await tr.get(b"a")
    manual_clock.advance(limits.TRANSACTION_DURATION_S_LIMIT + 0.5)
    with pytest.raises(TransactionTimedOut, match=r"limit of 5\.0 s"):
        tr.set(b"a", b"late")
    with pytest.raises(TransactionClosed):
        await tr.commit()
    await tr.cancel()
    assert await everything(db) == []


async def test_an_exception_in_the_body_writes_nothing(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as tr:
            tr.set(b"never", b"written")
            raise Boom
    assert tr.state.value == "cancelled"
    with pytest.raises(TransactionClosed):
        await tr.get(b"never")
    assert await everything(db) == []


async def test_closed_database_refuses_transactions(db: Database) -> None:
    from kelpie.errors import DatabaseClosed

    await db.close()
    with pytest.raises(DatabaseClosed):
        db.transaction()
