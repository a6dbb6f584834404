"""`kelpie bench` through the CLI: the JSON shape every suite promises, and bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kelpie.bench.report import nearest_rank_ns, summary
from kelpie.cli import main
from kelpie.errors import InvalidArgument


def test_storage_bench_json_shape_on_memory() -> None:
    result = CliRunner().invoke(main, ["bench", "storage", "--backend", "memory", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["suite"] == "storage"
    names = {row["name"] for row in report["results"]}
    assert names == {"point_read", "range_read_100", "durable_commit", "concurrent_commit_32"}
    for row in report["results"]:
        assert row["backend"] == "memory"
        assert 0 < row["p50_us"] <= row["p99_us"]
        assert row["ops_per_s"] > 0


def test_unknown_storage_backend_is_refused_by_name() -> None:
    from kelpie.bench.storage import run_storage_bench

    with pytest.raises(InvalidArgument, match="'mysql'"):
        run_storage_bench(["mysql"], quick=True)


def test_percentiles_and_rows() -> None:
    assert nearest_rank_ns([1, 2, 3, 4], 50) == 2
    assert nearest_rank_ns([1, 2, 3, 4], 99) == 4
    row = summary("case", "memory", [1_000, 3_000], wall_ns=1_000_000)
    assert row == {"name": "case", "backend": "memory", "p50_us": 1.0, "p99_us": 3.0, "ops_per_s": 2000.0}
