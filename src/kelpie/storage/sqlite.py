"""The embedded backend: one SQLite file in WAL mode, safe for several processes at once.

Reads run on the event loop thread against a pooled connection holding a WAL read transaction,
which is the snapshot: SQLite serves it from the page cache in microseconds and WAL readers never
wait for writers, so a thread hop would cost more than the read. Commits go to one writer thread
per process that groups every commit waiting into one SQLite transaction and one fsync (group
commit). Conflict detection is Kelpie's own, identical to the other backends: a ``conflict_log``
table holds recent commits' write ranges; ``BEGIN IMMEDIATE`` serialises writers across processes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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

__all__ = ["FORMAT_VERSION", "SqliteBackend", "open_sqlite"]

FORMAT_VERSION: Final = 1
_PRUNE_INTERVAL_S: Final = 1.0

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflict_log (
    version INTEGER NOT NULL,
    begin_key BLOB NOT NULL,
    end_key BLOB NOT NULL,
    committed_at_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conflict_log_by_version ON conflict_log (version);
CREATE INDEX IF NOT EXISTS conflict_log_by_time ON conflict_log (committed_at_s);
"""


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,
        timeout=limits.SQLITE_BUSY_TIMEOUT_S,
        cached_statements=64,
    )
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute(f"PRAGMA busy_timeout={int(limits.SQLITE_BUSY_TIMEOUT_S * 1000)}")
    return connection


def _initialise(path: Path, synchronous: str) -> None:
    """Create or check the schema. Safe when several processes open the same file at once."""
    connection = _connect(path, synchronous)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageUnavailable(f"SQLite file {path} could not switch to WAL mode (got {mode!r})")
        connection.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        row = connection.execute("SELECT value FROM meta WHERE name = 'format_version'").fetchone()
        if row is None:
            connection.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [("format_version", FORMAT_VERSION), ("version", 0), ("pruned_through_version", 0)],
            )
        elif row[0] != FORMAT_VERSION:
            connection.execute("ROLLBACK")
            raise IncompatibleFormat(
                f"SQLite store {path} has format version {row[0]}, but this Kelpie reads only "
                f"format version {FORMAT_VERSION}; upgrade Kelpie to open it"
            )
        connection.execute("COMMIT")
    finally:
        connection.close()


class _SqliteSnapshot:
    __slots__ = ("_backend", "_connection", "read_version")

    def __init__(self, backend: SqliteBackend, connection: sqlite3.Connection, read_version: int) -> None:
        self._backend = backend
        self._connection: sqlite3.Connection | None = connection
        self.read_version = read_version

    def _live(self) -> sqlite3.Connection:
        if self._connection is None:
            raise DatabaseClosed("snapshot already released")
        return self._connection

    async def get(self, key: bytes) -> bytes | None:
        row = self._live().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    async def get_range(self, begin: bytes, end: bytes, *, limit: int, reverse: bool) -> list[KeyValue]:
        order = "DESC" if reverse else "ASC"
        rows = (
            self._live()
            .execute(
                f"SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key {order} LIMIT ?",
                (begin, end, limit),
            )
            .fetchall()
        )
        return [(bytes(key), bytes(value)) for key, value in rows]

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._backend._return_reader(connection)


@dataclass(slots=True)
class _PendingCommit:
    request: CommitRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]


class SqliteBackend:
    """See the module docstring. Open with :func:`open_sqlite`."""

    name = "sqlite"

    def __init__(self, path: Path, synchronous: str, env: Env) -> None:
        self._path = path
        self._synchronous = synchronous
        self._env = env
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_open = 0
        # Callers waiting for a reader when all are busy; a returned reader goes to the first.
        self._reader_waiters: collections.deque[asyncio.Future[sqlite3.Connection]] = collections.deque()
        self._closed = False
        self._pending: collections.deque[_PendingCommit] = collections.deque()
        self._wake = threading.Condition()
        self._writer_stop = False
        self._writer_ready = threading.Event()
        self._writer_error: BaseException | None = None
        self._broken: BaseException | None = None
        self._history = ConflictIndex()  # the writer thread's copy of conflict_log
        self._writer = threading.Thread(target=self._write_loop, name=f"kelpie-sqlite-writer:{path.name}")

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._writer.start()
        await asyncio.to_thread(self._writer_ready.wait)
        if self._writer_error is not None:
            await asyncio.to_thread(self._writer.join)
            raise StorageUnavailable(f"SQLite writer for {self._path} failed to start: {self._writer_error}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._wake:
            self._writer_stop = True
            self._wake.notify()
        await asyncio.to_thread(self._writer.join)
        for connection in self._idle_readers:
            connection.close()
        self._idle_readers.clear()

    # --- reads -----------------------------------------------------------------------------------

    async def open_snapshot(self) -> _SqliteSnapshot:
        if self._closed:
            raise DatabaseClosed(f"SQLite database {self._path} is closed")
        connection = await self._take_reader()
        try:
            connection.execute("BEGIN")
            read_version = connection.execute("SELECT value FROM meta WHERE name = 'version'").fetchone()[0]
        except sqlite3.Error as error:
            self._discard_reader(connection)
            raise StorageUnavailable(f"SQLite read on {self._path} failed: {error}") from error
        return _SqliteSnapshot(self, connection, int(read_version))

    async def _take_reader(self) -> sqlite3.Connection:
        if self._idle_readers:
            return self._idle_readers.pop()
        if self._readers_open < limits.SQLITE_READ_CONNECTIONS_LIMIT:
            self._readers_open += 1
            try:
                return _connect(self._path, self._synchronous)
            except sqlite3.Error as error:
                self._readers_open -= 1
                raise StorageUnavailable(f"cannot open SQLite file {self._path}: {error}") from error
        waiter: asyncio.Future[sqlite3.Connection] = asyncio.get_running_loop().create_future()
        self._reader_waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._return_reader(waiter.result(), rolled_back=True)
            raise

    def _return_reader(self, connection: sqlite3.Connection, *, rolled_back: bool = False) -> None:
        if not rolled_back:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                self._discard_reader(connection)
                return
        if self._closed:
            connection.close()
            self._readers_open -= 1
            return
        while self._reader_waiters:
            waiter = self._reader_waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle_readers.append(connection)

    def _discard_reader(self, connection: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            connection.close()
        self._readers_open -= 1
        # A waiter may be queued for the slot this connection held: give it a fresh connection.
        while self._reader_waiters and not self._closed:
            waiter = self._reader_waiters.popleft()
            if waiter.done():
                continue
            try:
                replacement = _connect(self._path, self._synchronous)
            except sqlite3.Error as error:
                waiter.set_exception(StorageUnavailable(f"cannot open SQLite file {self._path}: {error}"))
                return
            self._readers_open += 1
            waiter.set_result(replacement)
            return

    # --- commits ---------------------------------------------------------------------------------

    async def commit(self, request: CommitRequest) -> int:
        if self._closed:
            raise DatabaseClosed(f"SQLite database {self._path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._wake:
            if self._broken is not None:
                raise CommitFailed(f"SQLite writer for {self._path} has failed ({self._broken!r}); reopen")
            if len(self._pending) >= limits.COMMIT_QUEUE_TRANSACTIONS_LIMIT:
                raise CommitFailed(
                    f"SQLite commit queue is full ({limits.COMMIT_QUEUE_TRANSACTIONS_LIMIT} waiting); "
                    "nothing was written, retry later"
                )
            self._pending.append(_PendingCommit(request, loop, future))
            self._wake.notify()
        return await future

    def _write_loop(self) -> None:
        try:
            connection = _connect(self._path, self._synchronous)
        except BaseException as error:  # reported to start(), which raises it
            self._writer_error = error
            self._writer_ready.set()
            return
        self._writer_ready.set()
        last_prune_s = 0.0
        try:
            while True:
                with self._wake:
                    while not self._pending and not self._writer_stop:
                        self._wake.wait()
                    if not self._pending and self._writer_stop:
                        return
                    batch = self._take_batch()
                now_s = self._env.clock.wall_s()
                prune = now_s - last_prune_s >= _PRUNE_INTERVAL_S
                try:
                    outcomes = self._commit_batch(connection, batch, now_s, prune)
                except BaseException as error:
                    # A bug below: never leave a committer waiting forever. The batch's fate is
                    # unknown; the writer stops and every later commit fails at once.
                    self._broken = error
                    unknown = CommitUnknownResult(f"SQLite writer for {self._path} failed: {error!r}")
                    self._deliver(batch, [unknown] * len(batch))
                    return  # surfaced to every committer, now and later; nothing is swallowed
                if prune:
                    last_prune_s = now_s
                self._deliver(batch, outcomes)
        finally:
            with self._wake:
                abandoned = list(self._pending)
                self._pending.clear()
            if abandoned:
                failure = CommitFailed(f"SQLite writer for {self._path} stopped; nothing written")
                self._deliver(abandoned, [failure] * len(abandoned))
            connection.close()

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

    def _commit_batch(
        self, connection: sqlite3.Connection, batch: list[_PendingCommit], now_s: float, prune: bool
    ) -> list[int | KelpieError]:
        requests = [pending.request for pending in batch]
        try:
            connection.execute("BEGIN IMMEDIATE")
            meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
            self._catch_up_history(connection, meta["pruned_through_version"])
            plan = plan_batch(
                requests,
                version=meta["version"],
                pruned_through_version=meta["pruned_through_version"],
                history=self._history,
            )
            connection.executemany("DELETE FROM kv WHERE key >= ? AND key < ?", plan.cleared_ranges)
            connection.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", plan.upserts)
            connection.executemany("DELETE FROM kv WHERE key = ?", [(key,) for key in plan.deletions])
            connection.executemany(
                "INSERT INTO conflict_log (version, begin_key, end_key, committed_at_s) VALUES (?, ?, ?, ?)",
                [(version, begin, end, now_s) for version, begin, end in plan.conflict_log],
            )
            connection.execute("UPDATE meta SET value = ? WHERE name = 'version'", (plan.version,))
            pruned_through = self._prune(connection, now_s) if prune else None
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            failure = CommitFailed(f"SQLite commit on {self._path} failed, nothing written: {error}")
            return [failure] * len(batch)
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            unknown = CommitUnknownResult(f"SQLite COMMIT on {self._path} failed: {error}")
            return [unknown if isinstance(outcome, int) else outcome for outcome in plan.outcomes]
        for version, begin, end in plan.conflict_log:
            self._history.add_entry(version, begin, end)
        if pruned_through is not None:
            self._history.prune(pruned_through)
        return plan.outcomes

    def _catch_up_history(self, connection: sqlite3.Connection, pruned_through: int) -> None:
        """Load into the writer's conflict index the commits other processes made since its last look."""
        self._history.prune(pruned_through)
        rows = connection.execute(
            "SELECT version, begin_key, end_key FROM conflict_log WHERE version > ? ORDER BY version",
            (max(self._history.newest_version, pruned_through),),
        ).fetchall()
        for version, begin, end in rows:
            self._history.add_entry(int(version), bytes(begin), bytes(end))

    @staticmethod
    def _prune(connection: sqlite3.Connection, now_s: float) -> int | None:
        """Drop history older than the conflict window; return the version pruned through."""
        row = connection.execute(
            "SELECT max(version) FROM conflict_log WHERE committed_at_s < ?",
            (now_s - limits.CONFLICT_WINDOW_S,),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        through = int(row[0])
        connection.execute("DELETE FROM conflict_log WHERE version <= ?", (through,))
        connection.execute(
            "UPDATE meta SET value = max(value, ?) WHERE name = 'pruned_through_version'", (through,)
        )
        return through

    @staticmethod
    def _deliver(batch: list[_PendingCommit], outcomes: list[int | KelpieError]) -> None:
        assert len(batch) == len(outcomes)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | KelpieError]]] = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed; nobody is waiting
                loop.call_soon_threadsafe(_resolve_all, results)


def _resolve_all(results: list[tuple[asyncio.Future[int], int | KelpieError]]) -> None:
    for future, outcome in results:
        if future.done():  # the caller was cancelled; for it the result is unknown
            continue
        if isinstance(outcome, int):
            future.set_result(outcome)
        else:
            future.set_exception(outcome)


async def open_sqlite(path: Path, *, env: Env, synchronous: str = "FULL") -> SqliteBackend:
    """Open (creating if needed) the SQLite store at ``path``.

    Raises:
        StorageUnavailable: the file or its directory cannot be opened or created.
        IncompatibleFormat: the file was written by a different format version.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_initialise, path, synchronous)
    except (OSError, sqlite3.Error) as error:
        raise StorageUnavailable(f"cannot open SQLite store at {path}: {error}") from error
    backend = SqliteBackend(path, synchronous, env)
    await backend.start()
    return backend
