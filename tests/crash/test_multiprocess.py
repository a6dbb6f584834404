"""Several processes share one store: no increment is lost and none is applied twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kelpie.storage import open_database
from tests.conftest import fresh_postgres_url

PROCESSES = 3
INCREMENTS_PER_PROCESS = 150
WORKER = Path(__file__).with_name("increment_worker.py")


def run_workers(url: str) -> None:
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    children = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, str(INCREMENTS_PER_PROCESS)],
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for _ in range(PROCESSES)
    ]
    for child in children:
        _, stderr = child.communicate(timeout=240)
        assert child.returncode == 0, stderr


async def hammer(url: str) -> None:
    run_workers(url)
    db = await open_database(url)
    try:
        async with db.transaction() as tr:
            assert await tr.get(b"counter") == b"%d" % (PROCESSES * INCREMENTS_PER_PROCESS)
    finally:
        await db.close()


async def test_processes_sharing_one_sqlite_file(tmp_path: Path) -> None:
    await hammer(f"sqlite:///{(tmp_path / 'shared.db').as_posix()}")


@pytest.mark.postgres
async def test_processes_sharing_one_postgres(request: pytest.FixtureRequest) -> None:
    await hammer(fresh_postgres_url(request.getfixturevalue("postgres_server")))
