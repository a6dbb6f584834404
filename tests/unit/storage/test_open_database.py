"""Opening stores: URL handling, format versions, unreachable servers, fault hooks."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import psycopg
import pytest

from kelpie.env import Env
from kelpie.errors import (
    CommitFailed,
    CommitUnknownResult,
    IncompatibleFormat,
    InvalidArgument,
    StorageUnavailable,
    UnsupportedStorageURL,
)
from kelpie.storage import CommitFault, MemoryBackend, open_database, redact_url
from kelpie.testing.postgres_server import PostgresServer
from tests.conftest import ManualClock, fresh_postgres_url


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://localhost/db", "unknown scheme 'mysql'"),
        ("nonsense", "unknown scheme ''"),
        ("sqlite://", "no file path"),
        ("sqlite://somehost/x.db", "not a host"),
        ("sqlite:///x.db?journal=off", "unknown SQLite option"),
        ("sqlite:///x.db?synchronous=off", "synchronous='OFF'"),
        ("memory://somewhere", "takes no host"),
        ("postgresql:///nohost", "names no host"),
    ],
)
async def test_bad_urls_name_the_url_and_the_problem(url: str, fragment: str, manual_env: Env) -> None:
    with pytest.raises(UnsupportedStorageURL) as caught:
        await open_database(url, env=manual_env)
    assert fragment in str(caught.value)
    assert repr(url)[:30] in str(caught.value) or url in str(caught.value)


async def test_a_non_string_url_is_refused(manual_env: Env) -> None:
    with pytest.raises(InvalidArgument, match="int"):
        await open_database(42, env=manual_env)  # type: ignore[arg-type]


def test_passwords_are_redacted() -> None:
    assert redact_url("postgresql://kelpie:s3cret@db:5432/k") == "postgresql://kelpie:***@db:5432/k"
    assert redact_url("postgresql://kelpie@db/k") == "postgresql://kelpie@db/k"


async def test_relative_and_absolute_sqlite_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manual_env: Env
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = await open_database("sqlite:///sub/dir/relative.db", env=manual_env)
    await relative.close()
    assert (tmp_path / "sub" / "dir" / "relative.db").is_file()
    absolute = await open_database(f"sqlite:///{tmp_path.as_posix()}/absolute.db", env=manual_env)
    await absolute.close()
    assert (tmp_path / "absolute.db").is_file()


async def test_sqlite_that_cannot_be_created_is_unavailable(tmp_path: Path, manual_env: Env) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailable, match=r"file/inside\.db"):
        await open_database(f"sqlite:///{blocker.as_posix()}/inside.db", env=manual_env)


async def test_sqlite_of_a_newer_format_is_refused_untouched(tmp_path: Path, manual_env: Env) -> None:
    path = tmp_path / "newer.db"
    db = await open_database(f"sqlite:///{path.as_posix()}", env=manual_env)
    async with db.transaction() as tr:
        tr.set(b"keep", b"me")
    await db.close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE meta SET value = 99 WHERE name = 'format_version'")
    with pytest.raises(IncompatibleFormat, match="format version 99"):
        await open_database(f"sqlite:///{path.as_posix()}", env=manual_env)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT value FROM kv WHERE key = ?", (b"keep",)).fetchone() == (b"me",)


@pytest.mark.postgres
async def test_postgres_of_a_newer_format_is_refused(
    postgres_server: PostgresServer, manual_env: Env
) -> None:
    url = fresh_postgres_url(postgres_server)
    db = await open_database(url, env=manual_env)
    await db.close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("UPDATE kelpie_meta SET value = 7 WHERE name = 'format_version'")
    with pytest.raises(IncompatibleFormat, match="format version 7"):
        await open_database(url, env=manual_env)


async def test_unreachable_postgres_is_unavailable_and_names_the_server(manual_env: Env) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://kelpie:hunter2@127.0.0.1:{port}/kelpie"
    with pytest.raises(StorageUnavailable) as caught:
        await open_database(url, env=manual_env)
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_memory_fault_hooks(manual_env: Env, manual_clock: ManualClock) -> None:
    db = await open_database("memory://", env=manual_env)
    assert isinstance(db.backend, MemoryBackend)
    faults = db.backend.store.faults
    faults.inject(CommitFault.FAIL_BEFORE_DURABLE)
    with pytest.raises(CommitFailed, match="before it was durable"):
        async with db.transaction() as tr:
            tr.set(b"a", b"lost")
    faults.inject(CommitFault.FAIL_AFTER_DURABLE)
    with pytest.raises(CommitUnknownResult, match="durable"):
        async with db.transaction() as tr:
            tr.set(b"b", b"kept")
    faults.commit_latency_s = lambda: 0.25
    async with db.transaction() as tr:
        tr.set(b"c", b"slow")
    assert manual_clock.slept_s == pytest.approx(0.25)
    assert db.backend.store.items() == [(b"b", b"kept"), (b"c", b"slow")]
    assert faults.injected_count == 2
    await db.close()


async def test_sqlite_is_wal_and_fsyncs_every_commit_by_default(tmp_path: Path, manual_env: Env) -> None:
    from kelpie.storage.sqlite import _connect

    path = tmp_path / "durable.db"
    db = await open_database(f"sqlite:///{path.as_posix()}", env=manual_env)
    await db.close()
    connection = _connect(path, "FULL")
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA synchronous").fetchone() == (2,)  # 2 = FULL
    finally:
        connection.close()


async def test_a_failing_sqlite_writer_fails_commits_instead_of_hanging(
    tmp_path: Path, manual_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kelpie.storage.sqlite import SqliteBackend

    db = await open_database(f"sqlite:///{(tmp_path / 'broken.db').as_posix()}", env=manual_env)

    def explode(*args: object, **kwargs: object) -> object:
        raise RuntimeError("bug in the writer")

    monkeypatch.setattr(SqliteBackend, "_commit_batch", explode)
    with pytest.raises(CommitUnknownResult, match="bug in the writer"):
        async with db.transaction() as tr:
            tr.set(b"a", b"1")
    with pytest.raises(CommitFailed, match="has failed"):
        async with db.transaction() as tr:
            tr.set(b"b", b"2")
    await db.close()
