"""The throwaway PostgreSQL server used by the fixtures and by ``kelpie bench``."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import psycopg
import pytest

from kelpie.errors import StorageUnavailable
from kelpie.testing import postgres_server
from kelpie.testing.postgres_server import (
    find_postgres_bin_dir,
    running_postgres_server,
    start_postgres_server,
)


@pytest.mark.postgres
def test_server_serves_queries_and_stop_removes_it() -> None:
    server = start_postgres_server()
    try:
        assert server.url == f"postgresql://kelpie@127.0.0.1:{server.port}/kelpie"
        assert (server.data_dir / "PG_VERSION").is_file()
        with psycopg.connect(server.url, autocommit=True) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
            assert connection.execute("select current_database(), current_user").fetchone() == (
                "kelpie",
                "kelpie",
            )
            version = connection.execute("show server_version_num").fetchone()
            assert version is not None
            assert int(version[0]) >= 150000
            assert connection.execute("show fsync").fetchone() == ("on",)
            assert connection.execute("show synchronous_commit").fetchone() == ("on",)
    finally:
        server.stop()

    assert not server.data_dir.exists()
    assert not server.root_dir.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", server.port)):
        pass
    server.stop()  # idempotent


@pytest.mark.postgres
def test_running_server_context_stops_on_exit() -> None:
    base_dir = Path("/tmp")  # under root the server user must reach it; pytest's tmp_path is 0700
    with running_postgres_server(base_dir=base_dir) as server:
        assert server.root_dir.parent == base_dir.resolve()
        with psycopg.connect(server.url) as connection:
            connection.execute("create table t (k bytea primary key, v bytea)")
            connection.execute("insert into t values ('\\x01', '\\x02')")
            connection.commit()
            assert connection.execute("select count(*) from t").fetchone() == (1,)
    assert not server.root_dir.exists()


def test_kelpie_pg_bin_without_initdb_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pg_ctl").write_text("#!/bin/sh\n")
    (tmp_path / "pg_ctl").chmod(0o755)
    monkeypatch.setenv("KELPIE_PG_BIN", str(tmp_path))

    with pytest.raises(StorageUnavailable, match="KELPIE_PG_BIN") as raised:
        find_postgres_bin_dir()

    message = str(raised.value)
    assert str(tmp_path) in message
    assert "initdb" in message
    assert "postgres" in message


def test_kelpie_pg_bin_pointing_at_a_complete_dir_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for program in ("initdb", "pg_ctl", "postgres"):
        (tmp_path / program).write_text("#!/bin/sh\n")
        (tmp_path / program).chmod(0o755)
    monkeypatch.setenv("KELPIE_PG_BIN", str(tmp_path))

    assert find_postgres_bin_dir() == tmp_path


@pytest.mark.postgres
def test_a_taken_port_is_retried_with_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken_port = squatter.getsockname()[1]
        real_pick = postgres_server._pick_free_port
        picks = iter([taken_port])
        monkeypatch.setattr(postgres_server, "_pick_free_port", lambda: next(picks, None) or real_pick())

        with running_postgres_server() as server:
            assert server.port != taken_port
            with psycopg.connect(server.url) as connection:
                assert connection.execute("select 1").fetchone() == (1,)
            assert "Address already in use" in server.log_path.read_text()


@pytest.mark.postgres
def test_a_port_that_stays_taken_fails_with_the_server_log_and_cleans_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under root the server user must traverse base_dir, and pytest's tmp_path is private to root.
    base_dir = Path(tempfile.mkdtemp(prefix="kelpie-test-"))
    base_dir.chmod(0o755)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken_port = squatter.getsockname()[1]
        monkeypatch.setattr(postgres_server, "_pick_free_port", lambda: taken_port)

        with pytest.raises(StorageUnavailable, match="Address already in use") as raised:
            start_postgres_server(base_dir=base_dir)

    assert "tail of server log" in str(raised.value)
    assert str(taken_port) in str(raised.value)
    assert list(base_dir.iterdir()) == []  # the server's directory was removed
    base_dir.rmdir()
