"""One transaction: read-your-writes, conflict ranges, limits and the commit, for every backend.

Reads come from a snapshot at the transaction's read version, taken on the first read, merged with
the transaction's own buffered writes. Every non-snapshot read records a read conflict range; every
write records a write conflict range. At commit the backend refuses the transaction with
:class:`~kelpie.errors.Conflict` if a commit newer than the read version wrote into any read
conflict range: that is optimistic concurrency control, and it makes the store strictly
serializable exactly as FoundationDB is.
"""

from __future__ import annotations

import enum
from types import TracebackType
from typing import TYPE_CHECKING

from kelpie import limits
from kelpie.errors import (
    InvalidArgument,
    TransactionClosed,
    TransactionTimedOut,
    TransactionTooLarge,
    shorten,
)
from kelpie.storage.backend import Backend, CommitRequest, KeyRange, KeyValue, Snapshot
from kelpie.storage.keys import check_key, check_value, key_after

if TYPE_CHECKING:
    from kelpie.env import Env

__all__ = ["Transaction", "TransactionState"]


class TransactionState(enum.Enum):
    OPEN = "open"
    COMMITTING = "committing"
    COMMITTED = "committed"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if type(limit) is not int or limit < 0:
        raise InvalidArgument(f"range limit must be a non-negative int or None, got {shorten(limit)}")
    return limit or None  # 0 means no limit, as in FoundationDB


def _coalesce(ranges: list[KeyRange]) -> tuple[KeyRange, ...]:
    """Sorted, non-overlapping ranges covering the same keys."""
    if not ranges:
        return ()
    ordered = sorted(ranges)
    merged = [ordered[0]]
    for begin, end in ordered[1:]:
        last_begin, last_end = merged[-1]
        if begin <= last_end:
            if end > last_end:
                merged[-1] = (last_begin, end)
        else:
            merged.append((begin, end))
    return tuple(merged)


class Transaction:
    """A strictly serializable transaction. Use it through ``async with db.transaction() as tr``.

    The body's writes commit when the block exits normally; an exception cancels the transaction
    and nothing is written. ``await tr.commit()`` commits early; later operations then raise
    :class:`~kelpie.errors.TransactionClosed`.
    """

    __slots__ = (
        "_backend",
        "_bytes_written",
        "_cleared_ranges",
        "_committed_version",
        "_env",
        "_read_conflicts",
        "_snapshot",
        "_started_s",
        "_state",
        "_writes",
    )

    def __init__(self, backend: Backend, env: Env) -> None:
        self._backend = backend
        self._env = env
        self._state = TransactionState.OPEN
        self._snapshot: Snapshot | None = None
        self._writes: dict[bytes, bytes | None] = {}
        self._cleared_ranges: list[KeyRange] = []
        self._read_conflicts: list[KeyRange] = []
        self._bytes_written = 0
        self._committed_version: int | None = None
        self._started_s = env.clock.monotonic_s()

    # --- state -----------------------------------------------------------------------------------

    @property
    def state(self) -> TransactionState:
        return self._state

    @property
    def committed_version(self) -> int | None:
        """The commit version once committed; ``None`` before, or for a read-only transaction."""
        return self._committed_version

    @property
    def env(self) -> Env:
        """The injected environment of this transaction's database."""
        return self._env

    @property
    def bytes_written(self) -> int:
        return self._bytes_written

    def _check_open(self) -> None:
        if self._state is not TransactionState.OPEN:
            raise TransactionClosed(f"transaction is {self._state.value}; start a new one")
        elapsed_s = self._env.clock.monotonic_s() - self._started_s
        if elapsed_s > limits.TRANSACTION_DURATION_S_LIMIT:
            self._state = TransactionState.FAILED
            raise TransactionTimedOut(
                f"transaction ran {elapsed_s:.3f} s, over the limit of "
                f"{limits.TRANSACTION_DURATION_S_LIMIT} s"
            )

    async def _snapshot_or_open(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = await self._backend.open_snapshot()
            # Opening can take a while (a pool wait); the transaction may have closed meanwhile.
            self._check_open()
        return self._snapshot

    async def get_read_version(self) -> int:
        """The version this transaction reads at (taking a snapshot if it has none yet)."""
        self._check_open()
        return (await self._snapshot_or_open()).read_version

    # --- reads -----------------------------------------------------------------------------------

    def _is_cleared(self, key: bytes) -> bool:
        return any(begin <= key < end for begin, end in self._cleared_ranges)

    async def get(self, key: bytes, *, snapshot: bool = False) -> bytes | None:
        """The value of ``key``, or ``None``. ``snapshot=True`` reads without a conflict range.

        Raises:
            InvalidKey, KeyTooLarge: a bad key.
            TransactionClosed, TransactionTimedOut: the transaction can no longer be used.
        """
        self._check_open()
        check_key(key)
        if key in self._writes:
            return self._writes[key]
        if self._cleared_ranges and self._is_cleared(key):
            return None
        store = await self._snapshot_or_open()
        value = await store.get(key)
        if not snapshot:
            self._read_conflicts.append((key, key_after(key)))
        return value

    async def get_range(
        self,
        begin: bytes,
        end: bytes,
        *,
        limit: int | None = None,
        reverse: bool = False,
        snapshot: bool = False,
    ) -> list[KeyValue]:
        """Pairs with ``begin <= key < end`` in key order (descending if ``reverse``).

        ``limit`` of ``None`` or 0 means all. Only the part of the range actually read is added as
        a conflict range, so a limited read does not conflict with writes beyond what it saw.

        Raises:
            InvalidKey, KeyTooLarge: a bad bound.
            InvalidArgument: a negative or non-int ``limit``.
            TransactionClosed, TransactionTimedOut: the transaction can no longer be used.
        """
        self._check_open()
        check_key(begin)
        check_key(end)
        row_limit = _check_limit(limit)
        if begin >= end:
            return []
        result = await self._merged_range(begin, end, row_limit, reverse)
        if not snapshot:
            if row_limit is not None and len(result) == row_limit:
                if reverse:
                    self._read_conflicts.append((result[-1][0], end))
                else:
                    self._read_conflicts.append((begin, key_after(result[-1][0])))
            else:
                self._read_conflicts.append((begin, end))
        return result

    async def _merged_range(
        self, begin: bytes, end: bytes, row_limit: int | None, reverse: bool
    ) -> list[KeyValue]:
        """The snapshot's rows in ``[begin, end)`` overlaid with this transaction's writes."""
        buffered = sorted((key, value) for key, value in self._writes.items() if begin <= key < end)
        if reverse:
            buffered.reverse()
        store = await self._snapshot_or_open()
        result: list[KeyValue] = []
        buffered_index = 0
        low, high = begin, end
        batch_rows = limits.RANGE_READ_BATCH_ROWS
        if row_limit is not None:
            batch_rows = min(batch_rows, row_limit + len(buffered))
        stored_done = False
        stored: list[KeyValue] = []
        stored_index = 0
        while row_limit is None or len(result) < row_limit:
            if stored_index == len(stored) and not stored_done:
                stored = await store.get_range(low, high, limit=batch_rows, reverse=reverse)
                stored_index = 0
                if len(stored) < batch_rows:
                    stored_done = True
                elif reverse:
                    high = stored[-1][0]
                else:
                    low = key_after(stored[-1][0])
                self._check_open()
            stored_key = stored[stored_index][0] if stored_index < len(stored) else None
            buffered_key = buffered[buffered_index][0] if buffered_index < len(buffered) else None
            if stored_key is None and buffered_key is None:
                break
            take_buffered = stored_key is None or (
                buffered_key is not None
                and (buffered_key >= stored_key if reverse else buffered_key <= stored_key)
            )
            if take_buffered:
                assert buffered_key is not None
                if buffered_key == stored_key:
                    stored_index += 1
                value = buffered[buffered_index][1]
                buffered_index += 1
                if value is not None:
                    result.append((buffered_key, value))
            else:
                assert stored_key is not None
                row = stored[stored_index]
                stored_index += 1
                if not (self._cleared_ranges and self._is_cleared(stored_key)):
                    result.append(row)
        return result

    # --- writes ----------------------------------------------------------------------------------

    def _account(self, byte_count: int) -> None:
        total = self._bytes_written + byte_count
        if total > limits.TRANSACTION_BYTES_LIMIT:
            # The snapshot is released by cancel(), which __aexit__ reaches on this error.
            self._state = TransactionState.FAILED
            raise TransactionTooLarge(
                f"transaction would write {total} bytes, over the limit of "
                f"{limits.TRANSACTION_BYTES_LIMIT} bytes; nothing was written"
            )
        self._bytes_written = total

    def set(self, key: bytes, value: bytes) -> None:
        """Write ``value`` at ``key`` when the transaction commits.

        Raises:
            InvalidKey, KeyTooLarge, InvalidArgument, ValueTooLarge: a bad key or value.
            TransactionTooLarge: the transaction would write more than the transaction limit.
            TransactionClosed, TransactionTimedOut: the transaction can no longer be used.
        """
        self._check_open()
        check_key(key)
        check_value(key, value)
        self._account(len(key) + len(value))
        self._writes[key] = value

    def clear(self, key: bytes) -> None:
        """Remove ``key`` when the transaction commits (no error if it is absent)."""
        self._check_open()
        check_key(key)
        self._account(len(key))
        self._writes[key] = None

    def clear_range(self, begin: bytes, end: bytes) -> None:
        """Remove every key with ``begin <= key < end`` when the transaction commits."""
        self._check_open()
        check_key(begin)
        check_key(end)
        if begin >= end:
            return
        self._account(len(begin) + len(end))
        for key in [key for key in self._writes if begin <= key < end]:
            del self._writes[key]
        self._cleared_ranges.append((begin, end))

    # --- commit ----------------------------------------------------------------------------------

    def _commit_request(self) -> CommitRequest:
        cleared = _coalesce(self._cleared_ranges)
        writes = tuple(sorted(self._writes.items()))
        write_conflicts = list(cleared)
        write_conflicts.extend((key, key_after(key)) for key, _ in writes)
        read_conflicts = _coalesce(self._read_conflicts)
        return CommitRequest(
            read_version=self._snapshot.read_version if self._snapshot and read_conflicts else None,
            read_conflict_ranges=read_conflicts,
            write_conflict_ranges=_coalesce(write_conflicts),
            cleared_ranges=cleared,
            writes=writes,
            bytes_written=self._bytes_written,
        )

    async def commit(self) -> int | None:
        """Commit durably; return the commit version (``None`` if nothing was written).

        Raises:
            Conflict: something this transaction read was changed by a newer commit (retry).
            TransactionTooOld, TransactionTimedOut, CommitFailed: retry from the start.
            CommitUnknownResult: the commit may have happened; retry only idempotent work.
            TransactionClosed: the transaction was already committed, failed or cancelled.
        """
        self._check_open()
        self._state = TransactionState.COMMITTING
        try:
            request = self._commit_request() if self._writes or self._cleared_ranges else None
            # The request carries the read version; the snapshot's connection is not needed to
            # commit, so it goes back to the pool before the (possibly long) wait for durability.
            await self._release()
            if request is not None:
                version = await self._backend.commit(request)
                assert version > 0, version
                self._committed_version = version
        except BaseException:
            self._state = TransactionState.FAILED
            await self._release()
            raise
        self._state = TransactionState.COMMITTED
        return self._committed_version

    async def cancel(self) -> None:
        """Abandon the transaction; nothing it wrote is committed. Safe to call more than once."""
        if self._state in (TransactionState.OPEN, TransactionState.COMMITTING):
            self._state = TransactionState.CANCELLED
        await self._release()

    async def _release(self) -> None:
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is not None:
            await snapshot.release()

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None and self._state is TransactionState.OPEN:
            await self.commit()
        else:
            await self.cancel()

    def __repr__(self) -> str:
        return f"<Transaction {self._state.value} writes={len(self._writes)}>"
