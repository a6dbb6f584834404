"""The storage benchmark: latency and throughput of the transactional store, per backend.

Every measurement goes through the public API (``open_database``, ``db.transaction()``), so it
covers the whole stack a layer above storage pays for: transaction bookkeeping, snapshots, conflict
ranges, group commit and the backend's durability. Each case warms up before it is timed.

Cases, each run on a fresh store preloaded with :data:`PRELOAD_KEYS` keys:

- ``point_read``: one transaction doing one ``get`` of an existing key, sequentially.
- ``range_read_100``: one transaction doing one ``get_range`` over 100 consecutive keys.
- ``durable_commit``: one transaction setting one new key, committed durably, sequentially.
- ``concurrent_commit_32``: 32 tasks committing blind single-key writes (never conflicting);
  ``ops_per_s`` is commits over wall time, the latency is per commit.

SQLite runs with its default ``synchronous=FULL``; PostgreSQL runs on a throwaway server started for
the run (``fsync`` and ``synchronous_commit`` on) unless ``$KELPIE_BENCH_POSTGRES_URL`` names one.
The benchmark writes only keys under :data:`KEY_PREFIX` and removes them before and after each run,
so a shared server is left as it was found.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kelpie.bench.harness import POSTGRES_URL_ENVIRONMENT_VARIABLE, Operation, store_url, timed, warmup_count
from kelpie.bench.report import machine, summary
from kelpie.errors import InvalidArgument, shorten
from kelpie.storage import Database, open_database, strinc

__all__ = ["BACKENDS", "POSTGRES_URL_ENVIRONMENT_VARIABLE", "run_storage_bench"]

BACKENDS: Final = ("memory", "sqlite", "postgresql")

# Every key the benchmark writes starts with this prefix, so a run against a shared PostgreSQL
# server ($KELPIE_BENCH_POSTGRES_URL) can remove exactly what it wrote.
KEY_PREFIX: Final = b"\xfeB"
KEY_BYTES: Final = 16
VALUE_BYTES: Final = 100
PRELOAD_KEYS: Final = 10_000
PRELOAD_KEYS_PER_TRANSACTION: Final = 1_000
RANGE_READ_KEYS: Final = 100
CONCURRENT_COMMITTERS: Final = 32
# Point reads visit the preloaded keys in a scattered order: a stride coprime with PRELOAD_KEYS.
READ_STRIDE: Final = 7_919

_DIGITS: Final = KEY_BYTES - len(KEY_PREFIX) - 1  # after the prefix and a one-letter kind
_VALUE: Final = bytes((index * 37 + 11) % 256 for index in range(VALUE_BYTES))

assert math.gcd(READ_STRIDE, PRELOAD_KEYS) == 1
assert RANGE_READ_KEYS <= PRELOAD_KEYS
assert PRELOAD_KEYS % PRELOAD_KEYS_PER_TRANSACTION == 0
assert 10**_DIGITS > PRELOAD_KEYS


@dataclass(frozen=True, kw_only=True)
class BenchSizes:
    """How many timed operations each case runs."""

    point_reads: int
    range_reads: int
    durable_commits: int
    concurrent_commits: int


QUICK_SIZES: Final = BenchSizes(
    point_reads=2_000, range_reads=1_000, durable_commits=200, concurrent_commits=2_000
)
FULL_SIZES: Final = BenchSizes(
    point_reads=20_000, range_reads=5_000, durable_commits=1_000, concurrent_commits=10_000
)


def run_storage_bench(backends: Sequence[str], *, quick: bool = False) -> dict[str, Any]:
    """Benchmark each named backend on a fresh store; return a JSON-ready report.

    Args:
        backends: names from :data:`BACKENDS`, run in the order given.
        quick: run the smaller sizes (:data:`QUICK_SIZES`, seconds per backend) instead of
            :data:`FULL_SIZES`.

    Returns:
        ``{"suite": "storage", "machine": {...}, "date": ISO 8601, "results": [{"name",
        "backend", "p50_us", "p99_us", "ops_per_s"}, ...]}``.

    Raises:
        InvalidArgument: ``backends`` is not a list of known backend names, or ``quick`` is not a bool.
        StorageUnavailable: a store could not be opened, or the PostgreSQL server could not start.
    """
    if isinstance(backends, str | bytes) or not isinstance(backends, Sequence):
        raise InvalidArgument(
            f"backends must be a list of names from {list(BACKENDS)}, got {shorten(backends)}"
        )
    for backend in backends:
        if backend not in BACKENDS:
            raise InvalidArgument(
                f"unknown storage backend {shorten(backend)}; expected one of {list(BACKENDS)}"
            )
    if type(quick) is not bool:
        raise InvalidArgument(f"quick must be a bool, got {shorten(quick)}")
    sizes = QUICK_SIZES if quick else FULL_SIZES
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results: list[dict[str, Any]] = []
    for backend in backends:
        with store_url(backend) as url:
            results.extend(asyncio.run(_bench_store(backend, url, sizes)))
    return {"suite": "storage", "machine": machine(), "date": date, "results": results}


# --- keys -----------------------------------------------------------------------------------------


def _key(kind: bytes, index: int) -> bytes:
    key = KEY_PREFIX + kind + b"%0*d" % (_DIGITS, index)
    assert len(key) == KEY_BYTES, key
    return key


def _preloaded_key(index: int) -> bytes:
    return _key(b"r", index)


class _WriteKeys:
    """Fresh keys for the write cases, never repeated within a run: every commit writes a new key."""

    def __init__(self) -> None:
        self._indexes: Iterator[int] = iter(range(10**_DIGITS))

    def next(self) -> bytes:
        return _key(b"w", next(self._indexes))


# --- cases ----------------------------------------------------------------------------------------


async def _bench_store(backend: str, url: str, sizes: BenchSizes) -> list[dict[str, Any]]:
    db = await open_database(url)
    try:
        await _clear_bench_keys(db)  # a shared server may hold keys from an earlier run
        await _preload(db)
        write_keys = _WriteKeys()
        results = [
            summary("point_read", backend, await timed(_point_reads(db), sizes.point_reads)),
            summary("range_read_100", backend, await timed(_range_reads(db), sizes.range_reads)),
            summary(
                "durable_commit",
                backend,
                await timed(_durable_commits(db, write_keys), sizes.durable_commits),
            ),
        ]
        latencies_ns, wall_ns = await _concurrent_commits(db, write_keys, sizes.concurrent_commits)
        results.append(summary(f"concurrent_commit_{CONCURRENT_COMMITTERS}", backend, latencies_ns, wall_ns))
        await _clear_bench_keys(db)
        return results
    finally:
        await db.close()


async def _clear_bench_keys(db: Database) -> None:
    async with db.transaction() as tr:
        tr.clear_range(KEY_PREFIX, strinc(KEY_PREFIX))


async def _preload(db: Database) -> None:
    for first in range(0, PRELOAD_KEYS, PRELOAD_KEYS_PER_TRANSACTION):
        async with db.transaction() as tr:
            for index in range(first, first + PRELOAD_KEYS_PER_TRANSACTION):
                tr.set(_preloaded_key(index), _VALUE)


def _point_reads(db: Database) -> Operation:
    async def point_read(sequence: int) -> int:
        key = _preloaded_key(sequence * READ_STRIDE % PRELOAD_KEYS)
        started_ns = time.perf_counter_ns()
        async with db.transaction() as tr:
            value = await tr.get(key)
        elapsed_ns = time.perf_counter_ns() - started_ns
        assert value == _VALUE, (key, value)
        return elapsed_ns

    return point_read


def _range_reads(db: Database) -> Operation:
    starts = PRELOAD_KEYS - RANGE_READ_KEYS + 1

    async def range_read(sequence: int) -> int:
        first = sequence * READ_STRIDE % starts
        begin = _preloaded_key(first)
        end = _preloaded_key(first + RANGE_READ_KEYS)
        started_ns = time.perf_counter_ns()
        async with db.transaction() as tr:
            rows = await tr.get_range(begin, end)
        elapsed_ns = time.perf_counter_ns() - started_ns
        assert len(rows) == RANGE_READ_KEYS, (begin, len(rows))
        assert rows[0][0] == begin, (begin, rows[0][0])
        return elapsed_ns

    return range_read


def _durable_commits(db: Database, write_keys: _WriteKeys) -> Operation:
    async def durable_commit(sequence: int) -> int:
        key = write_keys.next()
        started_ns = time.perf_counter_ns()
        async with db.transaction() as tr:
            tr.set(key, _VALUE)
        elapsed_ns = time.perf_counter_ns() - started_ns
        assert tr.committed_version is not None
        return elapsed_ns

    return durable_commit


async def _concurrent_commits(db: Database, write_keys: _WriteKeys, total: int) -> tuple[list[int], int]:
    """``total`` blind single-key commits by :data:`CONCURRENT_COMMITTERS` tasks, after a warm-up.

    Returns each commit's latency and the wall time of the whole run, in ns.
    """
    latencies_ns: list[int] = []

    async def committer(count: int, record: bool) -> None:
        for _ in range(count):
            key = write_keys.next()
            started_ns = time.perf_counter_ns()
            async with db.transaction() as tr:
                tr.set(key, _VALUE)
            elapsed_ns = time.perf_counter_ns() - started_ns
            assert tr.committed_version is not None
            if record:
                latencies_ns.append(elapsed_ns)

    async def run(total: int, record: bool) -> int:
        shares = [
            total // CONCURRENT_COMMITTERS + (1 if task < total % CONCURRENT_COMMITTERS else 0)
            for task in range(CONCURRENT_COMMITTERS)
        ]
        started_ns = time.perf_counter_ns()
        async with asyncio.TaskGroup() as group:
            for share in shares:
                group.create_task(committer(share, record))
        return time.perf_counter_ns() - started_ns

    warmup = warmup_count(total, minimum=CONCURRENT_COMMITTERS)
    await run(warmup, record=False)
    gc.collect()
    wall_ns = await run(total, record=True)
    assert len(latencies_ns) == total
    return latencies_ns, wall_ns


# --- statistics -----------------------------------------------------------------------------------
