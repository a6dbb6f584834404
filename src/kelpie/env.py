"""The injected environment: clock, randomness and ids.

Production code takes time, randomness and ids only from an :class:`Env`, never from ``time``,
``random``, ``uuid`` or ``asyncio.sleep`` directly, so that the simulator can replace all three and
replay a run exactly from its seed. A test (tests/unit/test_banned_apis.py) enforces this.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Clock", "Env", "IdFactory", "SystemClock", "real_env"]


class Clock(Protocol):
    """Time as Kelpie sees it."""

    def monotonic_s(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""
        ...

    def wall_s(self) -> float:
        """Seconds since the Unix epoch (may jump; never use it to order events across nodes)."""
        ...

    async def sleep(self, duration_s: float) -> None:
        """Wait ``duration_s`` seconds of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic_s(self) -> float:
        return time.monotonic()

    def wall_s(self) -> float:
        return time.time()

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(duration_s)


class IdFactory:
    """Makes UUIDs from the environment's randomness, so ids replay under simulation."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)


@dataclass(frozen=True, kw_only=True)
class Env:
    """Clock, seeded randomness and id factory, passed to everything that needs any of them."""

    clock: Clock
    rng: random.Random
    ids: IdFactory = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", IdFactory(self.rng))

    def now(self) -> datetime.datetime:
        """The wall-clock time as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.clock.wall_s(), tz=datetime.UTC)


def real_env(seed: int | None = None) -> Env:
    """The production environment: the system clock and OS-seeded randomness (or ``seed``)."""
    if seed is None:
        seed = random.SystemRandom().getrandbits(64)
    return Env(clock=SystemClock(), rng=random.Random(seed))
