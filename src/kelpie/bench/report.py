"""What every benchmark suite reports: result rows, percentiles, and the machine it ran on."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
from typing import Any

__all__ = ["machine", "nearest_rank_ns", "summary"]


def nearest_rank_ns(ordered_ns: list[int], percentile: float) -> int:
    """The nearest-rank percentile of a sorted, non-empty list."""
    assert ordered_ns
    assert 0 < percentile <= 100, percentile
    rank = math.ceil(percentile / 100 * len(ordered_ns))
    return ordered_ns[max(rank, 1) - 1]


def summary(name: str, backend: str, latencies_ns: list[int], wall_ns: int | None = None) -> dict[str, Any]:
    """One result row. ``ops_per_s`` is operations over ``wall_ns`` if given, else 1 / mean latency."""
    ordered_ns = sorted(latencies_ns)
    if wall_ns is None:
        mean_us = sum(ordered_ns) / len(ordered_ns) / 1_000
        ops_per_s = 1e6 / mean_us
    else:
        ops_per_s = len(ordered_ns) * 1e9 / wall_ns
    return {
        "name": name,
        "backend": backend,
        "p50_us": round(nearest_rank_ns(ordered_ns, 50) / 1_000, 1),
        "p99_us": round(nearest_rank_ns(ordered_ns, 99) / 1_000, 1),
        "ops_per_s": round(ops_per_s, 1),
    }


def machine(**extra: Any) -> dict[str, Any]:
    """Facts about this machine for the report, plus ``extra``."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        **extra,
    }
