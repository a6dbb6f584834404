"""The scale-out backend: PostgreSQL, shared by several Kelpie nodes.

Snapshots are ``REPEATABLE READ READ ONLY`` transactions on pooled connections; the read version is
the ``version`` row they see, which every commit updates in the same transaction as its data, so it
always matches the data the snapshot shows. Commits are grouped per process on one writer connection
and run ``SERIALIZABLE``: the first statement locks the version row, so committers from every node
take turns, and a serialization failure (a concurrent node won the row) retries the batch, bounded.
Conflict detection is Kelpie's own, identical to the other backends: a ``kelpie_conflict_log`` table
holds recent commits' write ranges.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from kelpie import limits
from kelpie.env import Env
from kelpie.errors import (
    CommitFailed,
    CommitUnknownResult,
    DatabaseClosed,
    IncompatibleFormat,
    KelpieError,
    StorageUnavailable,
)
from kelpie.storage.backend import CommitRequest, KeyValue
from kelpie.storage.batch import plan_batch
from kelpie.storage.conflicts import ConflictIndex

__all__ = ["FORMAT_VERSION", "PostgresBackend", "open_postgres"]

FORMAT_VERSION: Final = 1
_PRUNE_INTERVAL_S: Final = 1.0
_SCHEMA_LOCK_ID: Final = 0x6B656C706965  # "kelpie": serialises schema creation across nodes

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS kelpie_kv (key bytea PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS kelpie_meta (name text PRIMARY KEY, value bigint NOT NULL)",
    """CREATE TABLE IF NOT EXISTS kelpie_conflict_log (
        version bigint NOT NULL,
        begin_key bytea NOT NULL,
        end_key bytea NOT NULL,
        committed_at_s double precision NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS kelpie_conflict_log_by_version ON kelpie_conflict_log (version)",
    "CREATE INDEX IF NOT EXISTS kelpie_conflict_log_by_time ON kelpie_conflict_log (committed_at_s)",
)


class _PostgresSnapshot:
    __slots__ = ("_backend", "_connection", "read_version")

    def __init__(self, backend: PostgresBackend, connection: psycopg.AsyncConnection[Any], read_version: int):
        self._backend = backend
        self._connection: psycopg.AsyncConnection[Any] | None = connection
        self.read_version = read_version

    def _live(self) -> psycopg.AsyncConnection[Any]:
        if self._connection is None:
            raise DatabaseClosed("snapshot already released")
        return self._connection

    async def get(self, key: bytes) -> bytes | None:
        try:
            cursor = await self._live().execute(
                "SELECT value FROM kelpie_kv WHERE key = %b", (key,), binary=True
            )
            row = await cursor.fetchone()
        except psycopg.Error as error:
            raise StorageUnavailable(f"PostgreSQL read failed: {error}") from error
        return None if row is None else bytes(row[0])

    async def get_range(self, begin: bytes, end: bytes, *, limit: int, reverse: bool) -> list[KeyValue]:
        order = "DESC" if reverse else "ASC"
        try:
            cursor = await self._live().execute(
                f"SELECT key, value FROM kelpie_kv WHERE key >= %b AND key < %b "
                f"ORDER BY key {order} LIMIT %s",
                (begin, end, limit),
                binary=True,
            )
            rows = await cursor.fetchall()
        except psycopg.Error as error:
            raise StorageUnavailable(f"PostgreSQL range read failed: {error}") from error
        return [(bytes(key), bytes(value)) for key, value in rows]

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._backend._return_reader(connection)


@dataclass(slots=True)
class _PendingCommit:
    request: CommitRequest
    future: asyncio.Future[int]


class PostgresBackend:
    """See the module docstring. Open with :func:`open_postgres`."""

    name = "postgresql"

    def __init__(self, url: str, display_url: str, env: Env, pool: AsyncConnectionPool) -> None:
        self._url = url
        self._display_url = display_url
        self._env = env
        self._pool = pool
        self._closed = False
        self._pending: collections.deque[_PendingCommit] = collections.deque()
        self._wake = asyncio.Event()
        self._writer_connection: psycopg.AsyncConnection[Any] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._last_prune_s = 0.0
        self._history = ConflictIndex()  # the writer's copy of kelpie_conflict_log

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        # Owned by this backend: close() stops and awaits it; it never exits on an error.
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"kelpie-postgres-writer {self._display_url}"
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._writer_task is not None:
            await self._writer_task
        if self._writer_connection is not None:
            await self._writer_connection.close()
        await self._pool.close()

    # --- reads -----------------------------------------------------------------------------------

    async def open_snapshot(self) -> _PostgresSnapshot:
        if self._closed:
            raise DatabaseClosed(f"PostgreSQL database {self._display_url} is closed")
        try:
            connection = await self._pool.getconn()
        except Exception as error:  # psycopg_pool raises PoolTimeout and connection errors
            raise StorageUnavailable(f"no PostgreSQL connection for {self._display_url}: {error}") from error
        try:
            cursor = await connection.execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                "SELECT value FROM kelpie_meta WHERE name = 'version'"
            )
            cursor.nextset()
            row = await cursor.fetchone()
            assert row is not None, "kelpie_meta has no version row"
        except psycopg.Error as error:
            await self._pool.putconn(connection)
            raise StorageUnavailable(f"PostgreSQL read on {self._display_url} failed: {error}") from error
        return _PostgresSnapshot(self, connection, int(row[0]))

    async def _return_reader(self, connection: psycopg.AsyncConnection[Any]) -> None:
        with contextlib.suppress(psycopg.Error):
            await connection.execute("ROLLBACK")
        await self._pool.putconn(connection)

    # --- commits ---------------------------------------------------------------------------------

    async def commit(self, request: CommitRequest) -> int:
        if self._closed:
            raise DatabaseClosed(f"PostgreSQL database {self._display_url} is closed")
        if len(self._pending) >= limits.COMMIT_QUEUE_TRANSACTIONS_LIMIT:
            raise CommitFailed(
                f"PostgreSQL commit queue is full ({limits.COMMIT_QUEUE_TRANSACTIONS_LIMIT} waiting); "
                "nothing was written, retry later"
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_PendingCommit(request, future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take_batch()
            try:
                outcomes = await self._commit_batch_with_retries(batch)
            except Exception as error:  # a bug below: fail this batch loudly, keep serving others
                await self._drop_writer()
                unknown = CommitUnknownResult(f"PostgreSQL commit failed unexpectedly: {error!r}")
                unknown.__cause__ = error
                outcomes = [unknown] * len(batch)
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():  # the caller was cancelled; for it the result is unknown
                    continue
                if isinstance(outcome, int):
                    pending.future.set_result(outcome)
                else:
                    pending.future.set_exception(outcome)

    def _take_batch(self) -> list[_PendingCommit]:
        batch: list[_PendingCommit] = []
        batch_bytes = 0
        while self._pending and len(batch) < limits.COMMIT_BATCH_TRANSACTIONS_LIMIT:
            size = self._pending[0].request.bytes_written
            if batch and batch_bytes + size > limits.COMMIT_BATCH_BYTES_LIMIT:
                break
            batch.append(self._pending.popleft())
            batch_bytes += size
        return batch

    async def _writer(self) -> psycopg.AsyncConnection[Any]:
        if self._writer_connection is None or self._writer_connection.closed:
            self._writer_connection = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=int(limits.POSTGRES_CONNECT_TIMEOUT_S)
            )
        return self._writer_connection

    async def _commit_batch_with_retries(self, batch: list[_PendingCommit]) -> list[int | KelpieError]:
        requests = [pending.request for pending in batch]
        last_error: psycopg.Error | None = None
        for _attempt in range(limits.POSTGRES_SERIALIZATION_RETRIES_LIMIT):
            try:
                connection = await self._writer()
            except psycopg.Error as error:
                failure = CommitFailed(
                    f"cannot reach PostgreSQL at {self._display_url}, nothing written: {error}"
                )
                return [failure] * len(batch)
            outcomes: list[int | KelpieError] = []
            try:
                outcomes = await self._commit_batch(connection, requests)
            except psycopg.errors.SerializationFailure as error:
                # Another node committed first; nothing of ours was written. Take another turn.
                last_error = error
                with contextlib.suppress(psycopg.Error):
                    await connection.execute("ROLLBACK")
                await self._env.clock.sleep(self._env.rng.uniform(0, limits.RETRY_BACKOFF_S_INITIAL))
                continue
            except _CommitStatementFailed as wrapped:
                # COMMIT itself failed: the server may have committed before the connection broke.
                await self._drop_writer()
                unknown = CommitUnknownResult(
                    f"PostgreSQL COMMIT on {self._display_url} failed, result unknown: {wrapped.error}"
                )
                return [unknown if isinstance(outcome, int) else outcome for outcome in wrapped.outcomes]
            except psycopg.Error as error:
                await self._drop_writer()
                failure = CommitFailed(
                    f"PostgreSQL commit on {self._display_url} failed, nothing written: {error}"
                )
                return [failure] * len(batch)
            return outcomes
        failure = CommitFailed(
            f"PostgreSQL commit on {self._display_url} kept losing to other nodes "
            f"({limits.POSTGRES_SERIALIZATION_RETRIES_LIMIT} serialization failures, last: {last_error}); "
            "nothing written"
        )
        return [failure] * len(batch)

    async def _drop_writer(self) -> None:
        connection, self._writer_connection = self._writer_connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                await connection.close()

    async def _commit_batch(
        self, connection: psycopg.AsyncConnection[Any], requests: list[CommitRequest]
    ) -> list[int | KelpieError]:
        now_s = self._env.clock.wall_s()
        # One round trip to start and take the version row: committers on every node queue here.
        cursor = await connection.execute(
            "BEGIN ISOLATION LEVEL SERIALIZABLE; "
            "SELECT name, value FROM kelpie_meta WHERE name IN ('version', 'pruned_through_version') "
            "ORDER BY name FOR UPDATE"
        )
        cursor.nextset()
        meta = {str(name): int(value) for name, value in await cursor.fetchall()}
        plan = plan_batch(
            requests,
            version=meta["version"],
            pruned_through_version=meta["pruned_through_version"],
            history=await self._caught_up_history(connection, meta["pruned_through_version"]),
        )
        async with connection.cursor() as writer:
            if plan.cleared_ranges:
                await writer.execute(
                    "DELETE FROM kelpie_kv k USING unnest(%s::bytea[], %s::bytea[]) AS r(b, e) "
                    "WHERE k.key >= r.b AND k.key < r.e",
                    ([begin for begin, _ in plan.cleared_ranges], [end for _, end in plan.cleared_ranges]),
                )
            upserts = plan.upserts
            if upserts:
                await writer.execute(
                    "INSERT INTO kelpie_kv (key, value) SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    ([key for key, _ in upserts], [value for _, value in upserts]),
                )
            deletions = plan.deletions
            if deletions:
                await writer.execute("DELETE FROM kelpie_kv WHERE key = ANY(%s::bytea[])", (deletions,))
            if plan.conflict_log:
                await writer.execute(
                    "INSERT INTO kelpie_conflict_log (version, begin_key, end_key, committed_at_s) "
                    "SELECT v, b, e, %s FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[]) AS r(v, b, e)",
                    (
                        now_s,
                        [version for version, _, _ in plan.conflict_log],
                        [begin for _, begin, _ in plan.conflict_log],
                        [end for _, _, end in plan.conflict_log],
                    ),
                )
            await writer.execute("UPDATE kelpie_meta SET value = %s WHERE name = 'version'", (plan.version,))
        pruned_through = None
        if now_s - self._last_prune_s >= _PRUNE_INTERVAL_S:
            pruned_through = await self._prune(connection, now_s)
            self._last_prune_s = now_s
        try:
            await connection.execute("COMMIT")
        except psycopg.errors.SerializationFailure:
            raise
        except psycopg.Error as error:
            raise _CommitStatementFailed(error, plan.outcomes) from error
        for version, begin, end in plan.conflict_log:
            self._history.add_entry(version, begin, end)
        if pruned_through is not None:
            self._history.prune(pruned_through)
        return plan.outcomes

    async def _caught_up_history(
        self, connection: psycopg.AsyncConnection[Any], pruned_through: int
    ) -> ConflictIndex:
        """The writer's conflict index, with the commits other nodes made since its last look."""
        self._history.prune(pruned_through)
        cursor = await connection.execute(
            "SELECT version, begin_key, end_key FROM kelpie_conflict_log WHERE version > %s ORDER BY version",
            (max(self._history.newest_version, pruned_through),),
        )
        for version, begin, end in await cursor.fetchall():
            self._history.add_entry(int(version), bytes(begin), bytes(end))
        return self._history

    @staticmethod
    async def _prune(connection: psycopg.AsyncConnection[Any], now_s: float) -> int | None:
        """Drop history older than the conflict window; return the version pruned through."""
        cursor = await connection.execute(
            "SELECT max(version) FROM kelpie_conflict_log WHERE committed_at_s < %s",
            (now_s - limits.CONFLICT_WINDOW_S,),
        )
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            return None
        through = int(row[0])
        await connection.execute("DELETE FROM kelpie_conflict_log WHERE version <= %s", (through,))
        await connection.execute(
            "UPDATE kelpie_meta SET value = greatest(value, %s) WHERE name = 'pruned_through_version'",
            (through,),
        )
        return through


class _CommitStatementFailed(Exception):
    """Internal: COMMIT raised, so the batch's fate is unknown."""

    def __init__(self, error: psycopg.Error, outcomes: list[int | KelpieError]) -> None:
        super().__init__(str(error))
        self.error = error
        self.outcomes = outcomes


async def _initialise(url: str, display_url: str) -> None:
    connection = await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=int(limits.POSTGRES_CONNECT_TIMEOUT_S)
    )
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_ID,))
            for statement in _SCHEMA:
                await connection.execute(statement)
            cursor = await connection.execute("SELECT value FROM kelpie_meta WHERE name = 'format_version'")
            row = await cursor.fetchone()
            if row is None:
                await connection.execute(
                    "INSERT INTO kelpie_meta (name, value) VALUES ('format_version', %s), ('version', 0), "
                    "('pruned_through_version', 0)",
                    (FORMAT_VERSION,),
                )
            elif int(row[0]) != FORMAT_VERSION:
                raise IncompatibleFormat(
                    f"PostgreSQL store {display_url} has format version {row[0]}, but this Kelpie reads "
                    f"only format version {FORMAT_VERSION}; upgrade Kelpie to open it"
                )
    finally:
        await connection.close()


async def open_postgres(url: str, *, display_url: str, env: Env) -> PostgresBackend:
    """Connect, create or check the schema, and start the writer.

    Raises:
        StorageUnavailable: the server cannot be reached or refuses the connection.
        IncompatibleFormat: the store was written by a different format version.
    """
    try:
        await _initialise(url, display_url)
    except psycopg.Error as error:
        raise StorageUnavailable(f"cannot open PostgreSQL store {display_url}: {error}") from error
    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=limits.POSTGRES_CONNECTIONS_LIMIT,
        open=False,
        timeout=limits.POSTGRES_CONNECT_TIMEOUT_S,
        kwargs={"autocommit": True, "connect_timeout": int(limits.POSTGRES_CONNECT_TIMEOUT_S)},
    )
    try:
        await pool.open(wait=True, timeout=limits.POSTGRES_CONNECT_TIMEOUT_S)
    except Exception as error:  # psycopg_pool.PoolTimeout
        await pool.close()
        raise StorageUnavailable(f"cannot open a connection pool to {display_url}: {error}") from error
    backend = PostgresBackend(url, display_url, env, pool)
    backend.start()
    return backend
