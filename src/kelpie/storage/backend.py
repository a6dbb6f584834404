"""The contract between a transaction and a storage engine (memory, SQLite, PostgreSQL).

A backend knows two things: how to open a consistent read snapshot at a read version, and how to
commit a set of writes atomically after checking that nothing the transaction read has been written
by a commit newer than its read version. Everything else (read-your-writes, limits, retries,
conflict ranges) lives once, in :mod:`kelpie.storage.transaction`, so every backend behaves the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Backend", "CommitRequest", "KeyRange", "KeyValue", "Snapshot"]

KeyRange = tuple[bytes, bytes]
"""A half-open range ``[begin, end)`` of keys."""

KeyValue = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitRequest:
    """What a transaction asks its backend to commit.

    The effect is: clear every range in ``cleared_ranges``, then apply ``writes`` in order (a value
    of ``None`` clears that key). ``read_version`` is ``None`` when the transaction read nothing that
    needs checking, in which case it cannot conflict.
    """

    read_version: int | None
    read_conflict_ranges: tuple[KeyRange, ...]
    write_conflict_ranges: tuple[KeyRange, ...]
    cleared_ranges: tuple[KeyRange, ...]
    writes: tuple[tuple[bytes, bytes | None], ...]
    bytes_written: int


class Snapshot(Protocol):
    """A consistent view of the store at ``read_version``. Released exactly once."""

    @property
    def read_version(self) -> int: ...

    async def get(self, key: bytes) -> bytes | None: ...

    async def get_range(self, begin: bytes, end: bytes, *, limit: int, reverse: bool) -> list[KeyValue]:
        """Up to ``limit`` (> 0) pairs with ``begin <= key < end``, ascending or descending."""
        ...

    async def release(self) -> None: ...


class Backend(Protocol):
    """A storage engine. Implementations: memory, SQLite, PostgreSQL."""

    @property
    def name(self) -> str: ...

    async def open_snapshot(self) -> Snapshot:
        """A snapshot at the newest committed version."""
        ...

    async def commit(self, request: CommitRequest) -> int:
        """Commit atomically and durably; return the new commit version.

        Raises:
            Conflict: a read conflict range was written by a commit newer than ``read_version``.
            TransactionTooOld: ``read_version`` is older than the conflict history kept.
            CommitFailed: nothing was written.
            CommitUnknownResult: the writes may or may not have been applied.
        """
        ...

    async def close(self) -> None: ...
