"""The blob layer on every backend: any size, read back whole, atomically, integrity-checked."""

from __future__ import annotations

import hashlib
import random

import pytest

from kelpie import limits
from kelpie.errors import CorruptData, InvalidArgument
from kelpie.storage import BlobStore, Database, Subspace, transactional

BLOBS = BlobStore(Subspace(("blobs",)))


def payload(size_bytes: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size_bytes)


async def stored_keys(db: Database) -> list[bytes]:
    async with db.transaction() as tr:
        begin, end = Subspace(("blobs",)).range()
        return [key for key, _ in await tr.get_range(begin, end)]


@pytest.mark.parametrize(
    "size_bytes", [0, 1, limits.BLOB_CHUNK_BYTES, limits.BLOB_CHUNK_BYTES + 1, 3_000_000]
)
async def test_round_trip_in_one_transaction(db: Database, size_bytes: int) -> None:
    data = payload(size_bytes, seed=size_bytes)
    await BLOBS.put(db, "doc", data)
    assert await BLOBS.get(db, "doc") == data
    assert await BLOBS.get(db, "absent") is None


async def test_large_blob_spans_transactions_and_replacing_it_leaves_no_chunks(db: Database) -> None:
    big = payload(limits.BLOB_SINGLE_TRANSACTION_BYTES_LIMIT * 2 + 12_345, seed=1)
    await BLOBS.put(db, ("agent", 7), big)
    assert hashlib.sha256(await BLOBS.get(db, ("agent", 7)) or b"").digest() == hashlib.sha256(big).digest()
    small = b"small now"
    await BLOBS.put(db, ("agent", 7), small)
    assert await BLOBS.get(db, ("agent", 7)) == small
    assert len(await stored_keys(db)) == 2  # one header, one chunk: the big blob's chunks are gone
    await BLOBS.remove(db, ("agent", 7))
    assert await BLOBS.get(db, ("agent", 7)) is None
    assert await stored_keys(db) == []


async def test_readers_see_old_or_new_blob_never_a_mix(db: Database) -> None:
    old = payload(limits.BLOB_CHUNK_BYTES * 3, seed=2)
    new = payload(limits.BLOB_CHUNK_BYTES * 5, seed=3)
    await BLOBS.put(db, "swap", old)
    reader = db.transaction()
    assert await BLOBS.read(reader, "swap") == old
    await BLOBS.put(db, "swap", new)
    assert await BLOBS.read(reader, "swap") == old  # the reader's snapshot is unchanged
    await reader.cancel()
    assert await BLOBS.get(db, "swap") == new


async def test_a_damaged_chunk_is_detected(db: Database) -> None:
    await BLOBS.put(db, "fragile", payload(limits.BLOB_CHUNK_BYTES * 2, seed=4))

    async def damage(tr):  # type: ignore[no-untyped-def]
        begin, end = Subspace(("blobs",)).range()
        rows = await tr.get_range(begin, end)
        chunk_key, chunk = rows[-1]
        tr.set(chunk_key, bytes([chunk[0] ^ 1]) + chunk[1:])

    await transactional(db, damage)
    with pytest.raises(CorruptData, match="fragile"):
        await BLOBS.get(db, "fragile")


async def test_bad_blob_input(db: Database) -> None:
    with pytest.raises(InvalidArgument, match="str"):
        await BLOBS.put(db, "bad", "not bytes")  # type: ignore[arg-type]
    async with db.transaction() as tr:
        with pytest.raises(InvalidArgument, match="exceeds the limit"):
            await BLOBS.write(tr, "bad", b"x" * (limits.BLOB_SINGLE_TRANSACTION_BYTES_LIMIT + 1))
    assert await stored_keys(db) == []
