"""Fixtures for the actor runtime's unit tests.

The runtime's background loops (heartbeat, idle sweep, reminder poll) sleep on the injected clock.
With the shared ``ManualClock`` a sleep advances time, so those loops would race time forward on
their own. Here ``manual_clock`` is a :class:`ParkingClock`: a long sleep never returns, so the
loops stay parked and each test drives that work by hand (``runtime.sweep_idle()``,
``runtime.directory.beat()``, ``runtime.reminders.poll_once()``, ``runtime.timers.fire_due()``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from actor_kit import JOURNAL, ParkingClock

from kelpie.env import Env
from kelpie.storage import Database, MemoryBackend, open_database


@pytest.fixture
def manual_clock() -> ParkingClock:
    return ParkingClock()


@pytest.fixture(autouse=True)
def journal_reset() -> None:
    JOURNAL.reset()


@pytest.fixture
async def open_twin(db: Database, store_url: str) -> AsyncIterator[Callable[..., Awaitable[Database]]]:
    """Opens another :class:`Database` on ``db``'s store, as a second process would; by default
    with ``db``'s env, or with ``env`` (another node's own clock)."""
    opened: list[Database] = []

    async def open_twin(env: Env | None = None) -> Database:
        twin_env = env or db.env
        if db.backend_name == "memory":
            backend = db.backend
            assert isinstance(backend, MemoryBackend)
            twin = Database(MemoryBackend(backend.store), twin_env, url=db.url)
        else:
            twin = await open_database(store_url, env=twin_env)
        opened.append(twin)
        return twin

    yield open_twin
    for twin in opened:
        await twin.close()
