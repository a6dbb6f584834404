"""Values of any size, stored as chunks and read back whole, atomically.

Layout under the blob store's subspace, for a blob ``name`` (any tuple element):

- ``(name, 0)`` → header: ``(generation, size_bytes, chunk_count, sha256)``, packed as a tuple;
- ``(name, 1, generation, index)`` → chunk ``index`` of that generation;
- ``(name, 2, generation)`` → marker of a write in progress: the wall-clock start, in seconds.

A blob small enough for one transaction is written in that transaction. A larger one writes its
chunks under a fresh generation in several transactions, then publishes it with one final
transaction that switches the header: readers see the old blob or the new one, never a mix. Chunks
of generations that are neither published nor in progress (a writer that crashed) are collected by
the next write or delete of the same name. Every read checks size and SHA-256 before returning.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

from kelpie import limits
from kelpie.errors import CommitFailed, CorruptData, InvalidArgument, shorten
from kelpie.storage.database import Database, transactional
from kelpie.storage.subspace import Subspace
from kelpie.storage.transaction import Transaction
from kelpie.storage.tuple import TupleItem, pack, strinc, unpack

__all__ = ["BlobStore"]

_HEADER: Final = 0
_CHUNKS: Final = 1
_IN_PROGRESS: Final = 2
# A multi-transaction write still unpublished after this long is presumed dead and collected.
_WRITE_DURATION_S_LIMIT: Final = 3600.0


class BlobStore:
    """Blobs under one subspace. All methods are safe to call concurrently."""

    def __init__(self, subspace: Subspace) -> None:
        self._subspace = subspace

    # --- inside a caller's transaction -----------------------------------------------------------

    async def read(self, tr: Transaction, name: TupleItem) -> bytes | None:
        """The blob ``name`` as of ``tr``, or ``None`` if absent.

        Raises:
            CorruptData: the chunks do not add up to the size and digest in the header.
        """
        header = await tr.get(self._subspace.pack((name, _HEADER)))
        if header is None:
            return None
        generation, size_bytes, chunk_count, digest = _decode_header(name, header)
        begin, end = self._subspace.range((name, _CHUNKS, generation))
        rows = await tr.get_range(begin, end)
        if len(rows) != chunk_count:
            raise CorruptData(f"blob {shorten(name)} has {len(rows)} chunks, its header says {chunk_count}")
        data = b"".join(value for _, value in rows)
        if len(data) != size_bytes or hashlib.sha256(data).digest() != digest:
            raise CorruptData(f"blob {shorten(name)} does not match its header's size or SHA-256")
        return data

    async def write(self, tr: Transaction, name: TupleItem, data: bytes) -> None:
        """Replace blob ``name`` within ``tr``; for blobs up to the single-transaction limit.

        Raises:
            InvalidArgument: ``data`` is not bytes, or too large for one transaction (use :meth:`put`).
        """
        _check_data(data, limits.BLOB_SINGLE_TRANSACTION_BYTES_LIMIT)
        generation = uuid.UUID(bytes=hashlib.sha256(data).digest()[:16])
        await self._collect_other_generations(tr, name, keep=generation)
        self._write_chunks(tr, name, generation, data, first_index=0)
        self._set_header(tr, name, generation, data)

    async def delete(self, tr: Transaction, name: TupleItem) -> None:
        """Remove blob ``name`` (and any abandoned partial writes of it) within ``tr``."""
        await self._collect_other_generations(tr, name, keep=None)
        tr.clear(self._subspace.pack((name, _HEADER)))

    # --- whole operations with their own transactions --------------------------------------------

    async def get(self, db: Database, name: TupleItem) -> bytes | None:
        """Read blob ``name`` in a transaction of its own."""
        return await transactional(db, lambda tr: self.read(tr, name))

    async def put(self, db: Database, name: TupleItem, data: bytes) -> None:
        """Store ``data`` as blob ``name``, atomically, whatever its size (up to the blob limit).

        Raises:
            InvalidArgument: ``data`` is not bytes or exceeds :data:`kelpie.limits.BLOB_BYTES_LIMIT`.
            CommitFailed: a multi-transaction write was collected as abandoned before it finished.
        """
        _check_data(data, limits.BLOB_BYTES_LIMIT)
        if len(data) <= limits.BLOB_SINGLE_TRANSACTION_BYTES_LIMIT:
            await transactional(db, lambda tr: self.write(tr, name, data))
            return
        generation = db.env.ids.uuid4()
        marker_key = self._subspace.pack((name, _IN_PROGRESS, generation))
        started_s = db.env.clock.wall_s()

        async def begin(tr: Transaction) -> None:
            tr.set(marker_key, pack((started_s,)))

        await transactional(db, begin)
        chunks_per_transaction = limits.BLOB_SINGLE_TRANSACTION_BYTES_LIMIT // limits.BLOB_CHUNK_BYTES
        step_bytes = chunks_per_transaction * limits.BLOB_CHUNK_BYTES
        for offset in range(0, len(data), step_bytes):
            piece = data[offset : offset + step_bytes]
            first_index = offset // limits.BLOB_CHUNK_BYTES

            async def write_piece(
                tr: Transaction, piece: bytes = piece, first_index: int = first_index
            ) -> None:
                self._write_chunks(tr, name, generation, piece, first_index=first_index)

            await transactional(db, write_piece)

        async def publish(tr: Transaction) -> None:
            if await tr.get(marker_key) is None:
                raise CommitFailed(
                    f"blob {shorten(name)} write was collected as abandoned before it was published; "
                    "nothing changed, write it again"
                )
            tr.clear(marker_key)
            await self._collect_other_generations(tr, name, keep=generation)
            self._set_header(tr, name, generation, data)

        await transactional(db, publish)

    async def remove(self, db: Database, name: TupleItem) -> None:
        """Delete blob ``name`` in a transaction of its own."""
        await transactional(db, lambda tr: self.delete(tr, name))

    # --- internals -------------------------------------------------------------------------------

    def _write_chunks(
        self, tr: Transaction, name: TupleItem, generation: uuid.UUID, data: bytes, *, first_index: int
    ) -> None:
        chunk_bytes = limits.BLOB_CHUNK_BYTES
        for number, offset in enumerate(range(0, len(data), chunk_bytes)):
            key = self._subspace.pack((name, _CHUNKS, generation, first_index + number))
            tr.set(key, data[offset : offset + chunk_bytes])

    def _set_header(self, tr: Transaction, name: TupleItem, generation: uuid.UUID, data: bytes) -> None:
        chunk_count = -(-len(data) // limits.BLOB_CHUNK_BYTES)
        header = pack((generation, len(data), chunk_count, hashlib.sha256(data).digest()))
        tr.set(self._subspace.pack((name, _HEADER)), header)

    async def _collect_other_generations(
        self, tr: Transaction, name: TupleItem, *, keep: uuid.UUID | None
    ) -> None:
        """Clear every generation's chunks except ``keep`` and those of live in-progress writes."""
        spared: set[uuid.UUID] = set() if keep is None else {keep}
        now_s = tr.env.clock.wall_s()
        marker_begin, marker_end = self._subspace.range((name, _IN_PROGRESS))
        for key, value in await tr.get_range(marker_begin, marker_end):
            generation = self._subspace.unpack(key)[2]
            assert isinstance(generation, uuid.UUID), key
            (started_s,) = unpack(value)
            assert isinstance(started_s, float), value
            if now_s - started_s < _WRITE_DURATION_S_LIMIT:
                spared.add(generation)
            else:
                tr.clear(key)
        chunks_begin, chunks_end = self._subspace.range((name, _CHUNKS))
        cursor = chunks_begin
        for generation in sorted(spared, key=lambda value: value.bytes):
            generation_key = self._subspace.pack((name, _CHUNKS, generation))
            tr.clear_range(cursor, generation_key)
            cursor = strinc(generation_key)
        tr.clear_range(cursor, chunks_end)


def _check_data(data: object, bytes_limit: int) -> None:
    if type(data) is not bytes:
        raise InvalidArgument(f"blob data must be bytes, got {type(data).__name__} {shorten(data)}")
    if len(data) > bytes_limit:
        raise InvalidArgument(f"blob of {len(data)} bytes exceeds the limit of {bytes_limit} bytes")


def _decode_header(name: TupleItem, header: bytes) -> tuple[uuid.UUID, int, int, bytes]:
    items = unpack(header)
    if (
        len(items) != 4
        or not isinstance(items[0], uuid.UUID)
        or type(items[1]) is not int
        or type(items[2]) is not int
        or not isinstance(items[3], bytes)
    ):
        raise CorruptData(f"blob {shorten(name)} has a malformed header {shorten(header)}")
    return items[0], items[1], items[2], items[3]
