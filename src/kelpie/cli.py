"""The ``kelpie`` command line: ``kelpie serve``, ``kelpie bench storage`` and ``kelpie bench actors``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from kelpie import __version__
from kelpie.errors import InvalidArgument, KelpieError

__all__ = ["main"]

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_BENCH_BACKENDS = ("memory", "sqlite", "postgresql")


@click.group(name="kelpie")
@click.version_option(__version__, prog_name="kelpie")
def main() -> None:
    """Kelpie: an agent runtime built on virtual actors and a transactional key-value store."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=9000, show_default=True, help="Port to listen on."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".kelpie"),
    show_default=True,
    help="Directory of the default SQLite store (ignored when --storage is given).",
)
@click.option(
    "--storage",
    "storage_url",
    metavar="URL",
    default=None,
    help="Store to use instead of the data dir: sqlite:///path, postgresql://..., or memory://.",
)
@click.option(
    "--log-level", type=click.Choice(_LOG_LEVELS), default="info", show_default=True, help="Server log level."
)
def serve(host: str, port: int, data_dir: Path, storage_url: str | None, log_level: str) -> None:
    """Serve Kelpie's HTTP API until SIGTERM or Ctrl-C."""
    from kelpie.server import serve as serve_http  # imported lazily: bench and --help need none of it
    from kelpie.storage import sqlite_url_for_data_dir

    if storage_url is None:
        storage_url = sqlite_url_for_data_dir(data_dir.resolve())
    try:
        asyncio.run(serve_http(host=host, port=port, storage_url=storage_url, log_level=log_level))
    except KelpieError as error:
        # Reached only from startup: once serving, request errors are answered by the app itself.
        click.echo(f"error: {error}", err=True)
        raise SystemExit(2 if isinstance(error, InvalidArgument) else 1) from None


@main.group()
def bench() -> None:
    """Benchmarks of Kelpie's hot paths."""


@bench.command(name="storage")
@click.option(
    "--backend",
    type=click.Choice((*_BENCH_BACKENDS, "all")),
    default="all",
    show_default=True,
    help="Which backend to measure.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--quick", is_flag=True, help="Fewer operations: a smoke run, not a measurement.")
def bench_storage(backend: str, as_json: bool, quick: bool) -> None:
    """Latency and throughput of storage transactions on each backend."""
    from kelpie.bench.storage import run_storage_bench  # imported lazily: serve needs none of it

    backends = list(_BENCH_BACKENDS) if backend == "all" else [backend]
    result = run_storage_bench(backends, quick=quick)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_bench_table("kelpie bench storage", result["results"])


@bench.command(name="actors")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--quick", is_flag=True, help="Fewer operations: a smoke run, not a measurement.")
def bench_actors(as_json: bool, quick: bool) -> None:
    """Latency, throughput and memory of the actor runtime: hot requests, activation, durable turns."""
    from kelpie.bench.actors import run_actor_bench  # imported lazily: serve needs none of it

    result = run_actor_bench(quick=quick)
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_bench_table("kelpie bench actors", result["results"])


def _print_bench_table(title: str, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name", overflow="fold")
    table.add_column("backend")
    for column in ("p50_us", "p99_us", "ops_per_s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["backend"]),
            _format_number(row["p50_us"]),
            _format_number(row["p99_us"]),
            _format_number(row["ops_per_s"]),
        )
    Console().print(table)


def _format_number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
