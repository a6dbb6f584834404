"""The recent-writes index that decides conflicts, shared by every backend.

It holds the write conflict ranges of recent commits with their versions. Point ranges (one key,
the common case) live in a dict and a sorted key list, so a point read is checked in O(1) and a
range read by bisecting; other ranges are kept in version order and scanned from the newest until
the reader's version. Entries leave through :meth:`prune`, oldest version first.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable, Sequence

from kelpie.storage.backend import KeyRange

__all__ = ["ConflictIndex"]


def _point_key(begin: bytes, end: bytes) -> bytes | None:
    """``begin`` if ``[begin, end)`` holds exactly one key, else ``None``."""
    return begin if len(end) == len(begin) + 1 and end[-1] == 0 and end.startswith(begin) else None


class ConflictIndex:
    """Write ranges of commits newer than :attr:`pruned_through_version`."""

    def __init__(self) -> None:
        self._points: dict[bytes, int] = {}  # key -> newest version that wrote it
        self._point_keys: list[bytes] = []  # sorted keys of _points
        self._ranges: collections.deque[tuple[int, bytes, bytes]] = collections.deque()  # by version
        self._log: collections.deque[tuple[int, bytes, bytes]] = collections.deque()  # every entry
        self.newest_version = 0
        self.pruned_through_version = 0

    def __len__(self) -> int:
        return len(self._log)

    def add(self, version: int, write_ranges: Iterable[KeyRange]) -> None:
        """Record the write ranges of the commit at ``version`` (versions arrive in order)."""
        for begin, end in write_ranges:
            self.add_entry(version, begin, end)

    def add_entry(self, version: int, begin: bytes, end: bytes) -> None:
        """Record one write range of the commit at ``version`` (versions arrive in order)."""
        assert version >= self.newest_version, (version, self.newest_version)
        self.newest_version = version
        self._log.append((version, begin, end))
        key = _point_key(begin, end)
        if key is None:
            self._ranges.append((version, begin, end))
            return
        if key not in self._points:
            bisect.insort(self._point_keys, key)
        self._points[key] = version

    def newest_conflict(self, read_version: int, read_ranges: Sequence[KeyRange]) -> int | None:
        """The version of a commit after ``read_version`` that wrote into ``read_ranges``, if any."""
        points = self._points
        for read_begin, read_end in read_ranges:
            key = _point_key(read_begin, read_end)
            if key is not None:
                version = points.get(key)
                if version is not None and version > read_version:
                    return version
            else:
                keys = self._point_keys
                index = bisect.bisect_left(keys, read_begin)
                while index < len(keys) and keys[index] < read_end:
                    version = points[keys[index]]
                    if version > read_version:
                        return version
                    index += 1
            for version, write_begin, write_end in reversed(self._ranges):
                if version <= read_version:
                    break
                if write_begin < read_end and read_begin < write_end:
                    return version
        return None

    def prune(self, through_version: int) -> None:
        """Forget every entry at or below ``through_version``."""
        if through_version <= self.pruned_through_version:
            return
        self.pruned_through_version = through_version
        while self._log and self._log[0][0] <= through_version:
            version, begin, end = self._log.popleft()
            key = _point_key(begin, end)
            if key is None:
                assert self._ranges[0][0] == version
                self._ranges.popleft()
            elif self._points.get(key) == version:
                del self._points[key]
                del self._point_keys[bisect.bisect_left(self._point_keys, key)]
