"""The in-process backend: multi-version, deterministic, with fault hooks for the simulator.

Each key keeps its recent versions so that snapshots read a consistent past; versions no live
snapshot can see are trimmed as keys are written. Conflicts are found in a history of recent
commits' write ranges, kept for :data:`kelpie.limits.CONFLICT_WINDOW_S` of the injected clock.

Several :class:`~kelpie.storage.Database` handles may share one :class:`MemoryStore` (the simulator
runs several nodes on one store this way).
"""

from __future__ import annotations

import bisect
import collections
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from kelpie import limits
from kelpie.env import Env
from kelpie.errors import CommitFailed, CommitUnknownResult, Conflict, DatabaseClosed, TransactionTooOld
from kelpie.storage.backend import CommitRequest, KeyValue
from kelpie.storage.conflicts import ConflictIndex

__all__ = ["CommitFault", "MemoryBackend", "MemoryFaults", "MemoryStore"]


class CommitFault(enum.Enum):
    """What the fault hook makes of one commit."""

    NONE = "none"
    FAIL_BEFORE_DURABLE = "fail_before_durable"  # nothing written; the caller sees CommitFailed
    FAIL_AFTER_DURABLE = "fail_after_durable"  # written; the caller sees CommitUnknownResult


@dataclass(kw_only=True)
class MemoryFaults:
    """Fault hooks, consulted on every commit. Inert by default.

    ``choose_commit_fault`` decides each commit's fate; ``commit_latency_s`` returns how long the
    commit takes (slept on the injected clock, so simulated time advances). ``queued`` faults,
    added with :meth:`inject`, take precedence, first in first out.
    """

    choose_commit_fault: Callable[[], CommitFault] = field(default=lambda: CommitFault.NONE)
    commit_latency_s: Callable[[], float] = field(default=lambda: 0.0)
    queued: collections.deque[CommitFault] = field(default_factory=collections.deque)
    injected_count: int = 0

    def inject(self, fault: CommitFault, count: int = 1) -> None:
        """Make the next ``count`` commits suffer ``fault``."""
        self.queued.extend([fault] * count)

    def next_fault(self) -> CommitFault:
        fault = self.queued.popleft() if self.queued else self.choose_commit_fault()
        if fault is not CommitFault.NONE:
            self.injected_count += 1
        return fault


class MemoryStore:
    """The shared state of an in-memory store: versioned keys and the conflict history."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.version = 0
        self.faults = MemoryFaults()
        # key -> ascending [(version, value or None for a deletion)]
        self._versions: dict[bytes, list[tuple[int, bytes | None]]] = {}
        self._keys: list[bytes] = []  # sorted; every key with at least one version
        self._history = ConflictIndex()
        self._commit_times: collections.deque[tuple[float, int]] = collections.deque()  # (time, version)
        self._snapshot_versions: collections.Counter[int] = collections.Counter()

    # --- reads -----------------------------------------------------------------------------------

    def read(self, key: bytes, version: int) -> bytes | None:
        entries = self._versions.get(key)
        if not entries:
            return None
        index = bisect.bisect_right(entries, version, key=lambda entry: entry[0]) - 1
        return entries[index][1] if index >= 0 else None

    def read_range(self, begin: bytes, end: bytes, version: int, limit: int, reverse: bool) -> list[KeyValue]:
        low = bisect.bisect_left(self._keys, begin)
        high = bisect.bisect_left(self._keys, end)
        indexes = range(high - 1, low - 1, -1) if reverse else range(low, high)
        result: list[KeyValue] = []
        for index in indexes:
            key = self._keys[index]
            value = self.read(key, version)
            if value is not None:
                result.append((key, value))
                if len(result) == limit:
                    break
        return result

    def pin(self, version: int) -> None:
        self._snapshot_versions[version] += 1

    def unpin(self, version: int) -> None:
        self._snapshot_versions[version] -= 1
        if self._snapshot_versions[version] <= 0:
            del self._snapshot_versions[version]

    # --- commits ---------------------------------------------------------------------------------

    def check(self, request: CommitRequest) -> None:
        read_version = request.read_version
        if read_version is None:
            return
        pruned_through = self._history.pruned_through_version
        if read_version < pruned_through:
            raise TransactionTooOld(
                f"read version {read_version} is older than the conflict history "
                f"(kept from version {pruned_through})"
            )
        version = self._history.newest_conflict(read_version, request.read_conflict_ranges)
        if version is not None:
            raise Conflict(
                f"a key this transaction read at version {read_version} was written by the commit "
                f"at version {version}"
            )

    def apply(self, request: CommitRequest) -> int:
        self.version += 1
        version = self.version
        for begin, end in request.cleared_ranges:
            low = bisect.bisect_left(self._keys, begin)
            high = bisect.bisect_left(self._keys, end)
            for key in self._keys[low:high]:
                self._put(key, version, None)
        for key, value in request.writes:
            self._put(key, version, value)
        now_s = self.env.clock.monotonic_s()
        self._history.add(version, request.write_conflict_ranges)
        self._commit_times.append((now_s, version))
        self._prune(now_s)
        return version

    def _put(self, key: bytes, version: int, value: bytes | None) -> None:
        entries = self._versions.get(key)
        if entries is None:
            if value is None:
                return
            entries = self._versions[key] = []
            bisect.insort(self._keys, key)
        entries.append((version, value))
        # Trim versions that no live snapshot (nor any future one) can read.
        oldest_visible = min(self._snapshot_versions, default=version)
        keep_from = bisect.bisect_right(entries, oldest_visible, key=lambda entry: entry[0]) - 1
        if keep_from > 0:
            del entries[:keep_from]
        if len(entries) == 1 and entries[0][1] is None:
            del self._versions[key]
            del self._keys[bisect.bisect_left(self._keys, key)]

    def _prune(self, now_s: float) -> None:
        horizon_s = now_s - limits.CONFLICT_WINDOW_S
        through_version = None
        while self._commit_times and self._commit_times[0][0] < horizon_s:
            through_version = self._commit_times.popleft()[1]
        if through_version is not None:
            self._history.prune(through_version)

    def items(self) -> list[KeyValue]:
        """Every live key and value at the newest version (for tests and the simulator)."""
        return self.read_range(b"", b"\xff" * (limits.KEY_BYTES_LIMIT), self.version, 0, False)


class _MemorySnapshot:
    __slots__ = ("_released", "_store", "read_version")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.read_version = store.version
        self._released = False
        store.pin(self.read_version)

    async def get(self, key: bytes) -> bytes | None:
        return self._store.read(key, self.read_version)

    async def get_range(self, begin: bytes, end: bytes, *, limit: int, reverse: bool) -> list[KeyValue]:
        return self._store.read_range(begin, end, self.read_version, limit, reverse)

    async def release(self) -> None:
        if not self._released:
            self._released = True
            self._store.unpin(self.read_version)


class MemoryBackend:
    """A backend over a :class:`MemoryStore`; deterministic given the store's injected env."""

    name = "memory"

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._closed = False

    async def open_snapshot(self) -> _MemorySnapshot:
        if self._closed:
            raise DatabaseClosed("memory database is closed")
        return _MemorySnapshot(self.store)

    async def commit(self, request: CommitRequest) -> int:
        if self._closed:
            raise DatabaseClosed("memory database is closed")
        store = self.store
        latency_s = store.faults.commit_latency_s()
        if latency_s > 0:
            await store.env.clock.sleep(latency_s)
        fault = store.faults.next_fault()
        if fault is CommitFault.FAIL_BEFORE_DURABLE:
            raise CommitFailed("injected fault: the commit failed before it was durable")
        # Check and apply with no await between them: commits are atomic on the event loop.
        store.check(request)
        version = store.apply(request)
        if fault is CommitFault.FAIL_AFTER_DURABLE:
            raise CommitUnknownResult(
                f"injected fault: the commit at version {version} was durable but its result was lost"
            )
        return version

    async def close(self) -> None:
        self._closed = True
