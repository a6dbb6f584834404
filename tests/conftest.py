"""Shared fixtures: every storage backend, including a real PostgreSQL server started for the run."""

from __future__ import annotations

import asyncio
import itertools
import random
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from kelpie.env import Env
from kelpie.storage import Database, open_database
from kelpie.testing.postgres_server import PostgresServer, start_postgres_server

BACKENDS = ("memory", "sqlite", "postgresql")
_database_numbers = itertools.count()


class ManualClock:
    """A clock the test moves by hand; ``sleep`` advances it and yields to the loop once."""

    def __init__(self, start_s: float = 1_000_000.0) -> None:
        self.now_s = start_s
        self.slept_s = 0.0

    def monotonic_s(self) -> float:
        return self.now_s

    def wall_s(self) -> float:
        return self.now_s

    def advance(self, duration_s: float) -> None:
        self.now_s += duration_s

    async def sleep(self, duration_s: float) -> None:
        self.now_s += duration_s
        self.slept_s += duration_s
        await asyncio.sleep(0)


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def manual_env(manual_clock: ManualClock) -> Env:
    return Env(clock=manual_clock, rng=random.Random(1234))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole run. Never skipped: ./scripts/test installs it."""
    server = start_postgres_server()
    try:
        yield server
    finally:
        server.stop()


def fresh_postgres_url(server: PostgresServer) -> str:
    """A URL of a new, empty database on ``server``."""
    name = f"kelpie_test_{next(_database_numbers)}"
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(server.url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def make_store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{(tmp_path / 'store.db').as_posix()}"
    assert backend == "postgresql", backend
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return fresh_postgres_url(server)


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql":
        request.applymarker(pytest.mark.postgres)
    return name


@pytest.fixture
def store_url(backend_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return make_store_url(backend_name, tmp_path, request)


@pytest.fixture
async def db(store_url: str, manual_env: Env) -> AsyncIterator[Database]:
    database = await open_database(store_url, env=manual_env)
    try:
        yield database
    finally:
        await database.close()
