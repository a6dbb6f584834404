"""SIGKILL a process mid-stream of commits; every acknowledged commit survives, none is torn."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kelpie.storage import Database, open_database
from tests.conftest import fresh_postgres_url
from tests.crash.crash_writer import item_key, last_key, twin_key

WRITERS = 4
ROUNDS = 3
WRITER_SCRIPT = Path(__file__).with_name("crash_writer.py")


def run_and_kill(url: str, acks_before_kill: int) -> dict[int, int]:
    """Start the writer, SIGKILL it after ``acks_before_kill`` acks; the highest ack per writer."""
    child = subprocess.Popen(
        [sys.executable, str(WRITER_SCRIPT), url, str(WRITERS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    acknowledged: dict[int, int] = {}
    seen = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            _, writer, number = line.split()
            acknowledged[int(writer)] = int(number)
            seen += 1
            if seen >= acks_before_kill:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert seen >= acks_before_kill, child.stderr.read() if child.stderr else "writer exited early"
    return acknowledged


async def check_store(db: Database, acknowledged: dict[int, int]) -> dict[int, int]:
    """Every acknowledged item is present, items form a gap-free prefix, and no item is torn."""
    lasts: dict[int, int] = {}
    async with db.transaction() as tr:
        for writer in range(WRITERS):
            raw_last = await tr.get(last_key(writer))
            last = -1 if raw_last is None else int(raw_last)
            assert last >= acknowledged.get(writer, -1), (writer, last, acknowledged)
            items = await tr.get_range(item_key(writer, 0), item_key(writer, 10**8 - 1))
            twins = await tr.get_range(twin_key(writer, 0), twin_key(writer, 10**8 - 1))
            assert [key for key, _ in items] == [item_key(writer, number) for number in range(last + 1)]
            assert [key for key, _ in twins] == [twin_key(writer, number) for number in range(last + 1)]
            for (_, item), (_, twin) in zip(items, twins, strict=True):
                assert item == twin
            lasts[writer] = last
    return lasts


async def crash_rounds(url: str, seed: int) -> None:
    rng = random.Random(seed)
    total_acknowledged: dict[int, int] = {}
    for _round in range(ROUNDS):
        acknowledged = run_and_kill(url, acks_before_kill=rng.randint(50, 400))
        for writer, number in acknowledged.items():
            total_acknowledged[writer] = max(number, total_acknowledged.get(writer, -1))
        db = await open_database(url)
        try:
            lasts = await check_store(db, total_acknowledged)
        finally:
            await db.close()
        assert sum(lasts.values()) > 0
    print(f"crash test seed={seed} acknowledged={total_acknowledged}")


async def test_sqlite_keeps_every_acknowledged_commit_through_sigkill(tmp_path: Path) -> None:
    await crash_rounds(f"sqlite:///{(tmp_path / 'crash.db').as_posix()}", seed=11)


@pytest.mark.postgres
async def test_postgresql_keeps_every_acknowledged_commit_through_sigkill(
    request: pytest.FixtureRequest,
) -> None:
    url = fresh_postgres_url(request.getfixturevalue("postgres_server"))
    await crash_rounds(url, seed=12)
