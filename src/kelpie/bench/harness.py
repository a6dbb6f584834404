"""What every benchmark suite runs on: fresh stores, warm-up, and sequential timing."""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final

from kelpie.storage import sqlite_url_for_data_dir

__all__ = [
    "POSTGRES_URL_ENVIRONMENT_VARIABLE",
    "WARMUP_FRACTION",
    "WARMUP_OPERATIONS_MAX",
    "WARMUP_OPERATIONS_MIN",
    "Operation",
    "store_url",
    "timed",
    "warmup_count",
]

POSTGRES_URL_ENVIRONMENT_VARIABLE: Final = "KELPIE_BENCH_POSTGRES_URL"
WARMUP_OPERATIONS_MIN: Final = 10
WARMUP_OPERATIONS_MAX: Final = 500
WARMUP_FRACTION: Final = 0.1

# One operation of a case: given its sequence number, run it and return its latency in ns.
Operation = Callable[[int], Awaitable[int]]


def warmup_count(count: int, minimum: int = WARMUP_OPERATIONS_MIN) -> int:
    """How many untimed runs precede ``count`` timed ones."""
    return min(WARMUP_OPERATIONS_MAX, max(minimum, int(count * WARMUP_FRACTION)))


async def timed(operation: Operation, count: int, *, warmup: int | None = None) -> list[int]:
    """Run ``operation`` for a warm-up, then ``count`` times; return each timed run's latency in ns."""
    warmup = warmup_count(count) if warmup is None else warmup
    for sequence in range(warmup):
        await operation(sequence)
    gc.collect()  # start the timed runs with no garbage left over from setup and warm-up
    latencies_ns: list[int] = []
    for sequence in range(warmup, warmup + count):
        latencies_ns.append(await operation(sequence))
    return latencies_ns


@contextlib.contextmanager
def store_url(backend: str) -> Iterator[str]:
    """The URL of a fresh store for ``backend``; its directory or server is removed afterwards.

    PostgreSQL: the server named by ``$KELPIE_BENCH_POSTGRES_URL``, else a throwaway one.
    """
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="kelpie-bench-") as directory:
            yield sqlite_url_for_data_dir(Path(directory))
    else:
        assert backend == "postgresql", backend
        configured = os.environ.get(POSTGRES_URL_ENVIRONMENT_VARIABLE)
        if configured:
            yield configured
            return
        # Imported here: psycopg and the server helper are needed only for this backend.
        from kelpie.testing.postgres_server import running_postgres_server

        with running_postgres_server() as server:
            yield server.url
