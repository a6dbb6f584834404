"""Volatile timers: one scheduler per runtime, a heap of due times, firing as ordinary turns.

A timer belongs to one activation and dies with it. When due, the runtime enqueues
:class:`~kelpie.actors.actor.TimerFired` in the actor's mailbox, so a timer never interleaves with a
turn. Time is the injected clock's monotonic time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kelpie import limits
from kelpie.actors.actor import TimerFired
from kelpie.actors.context import reminder_name
from kelpie.actors.ids import ActorId
from kelpie.env import Env
from kelpie.errors import InvalidArgument, shorten

if TYPE_CHECKING:
    from kelpie.actors.activation import Activation

__all__ = ["TimerScheduler"]


@dataclass(order=True, slots=True)
class _Timer:
    due_s: float
    sequence: int
    actor_id: ActorId = field(compare=False)
    name: str = field(compare=False)
    period_s: float | None = field(compare=False)
    activation: Activation = field(compare=False, repr=False)
    cancelled: bool = field(default=False, compare=False)


def _check_seconds(name: str, value: object, *, minimum: float) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or math.isnan(value)
        or not minimum <= value < 10**9
    ):
        raise InvalidArgument(f"timer {name} must be a number in [{minimum}, 1e9), got {shorten(value)}")
    return float(value)


class TimerScheduler:
    """Timers of every activation on this runtime."""

    def __init__(self, env: Env, fire: Callable[[Activation, TimerFired], None]) -> None:
        self._env = env
        self._fire = fire
        self._heap: list[_Timer] = []
        self._by_key: dict[tuple[ActorId, str], _Timer] = {}
        self._per_actor: dict[ActorId, int] = {}
        self._sequence = itertools.count()
        self._changed = asyncio.Event()

    def set(self, activation: Activation, name: str, delay_s: float, period_s: float | None) -> None:
        reminder_name(name)
        activation.actor.handler_for(TimerFired(name))  # NoHandler now, not silently when it fires
        delay = _check_seconds("delay_s", delay_s, minimum=0.0)
        period = None if period_s is None else _check_seconds("period_s", period_s, minimum=0.001)
        key = (activation.actor_id, name)
        if key in self._by_key:
            self.cancel(*key)
        if self._per_actor.get(activation.actor_id, 0) >= limits.ACTOR_TIMERS_PER_ACTOR_LIMIT:
            raise InvalidArgument(
                f"actor {activation.actor_id} already has {limits.ACTOR_TIMERS_PER_ACTOR_LIMIT} timers"
            )
        timer = _Timer(
            self._env.clock.monotonic_s() + delay,
            next(self._sequence),
            activation.actor_id,
            name,
            period,
            activation,
        )
        self._by_key[key] = timer
        self._per_actor[activation.actor_id] = self._per_actor.get(activation.actor_id, 0) + 1
        heapq.heappush(self._heap, timer)
        self._changed.set()

    def cancel(self, actor_id: ActorId, name: str) -> None:
        timer = self._by_key.pop((actor_id, name), None)
        if timer is not None:
            timer.cancelled = True
            self._forget(actor_id)

    def cancel_all(self, actor_id: ActorId) -> None:
        for key in [key for key in self._by_key if key[0] == actor_id]:
            self.cancel(*key)

    def _forget(self, actor_id: ActorId) -> None:
        remaining = self._per_actor.get(actor_id, 1) - 1
        if remaining:
            self._per_actor[actor_id] = remaining
        else:
            self._per_actor.pop(actor_id, None)

    def fire_due(self) -> float | None:
        """Fire every due timer; return seconds until the next one (``None`` if none)."""
        now_s = self._env.clock.monotonic_s()
        while self._heap:
            timer = self._heap[0]
            if timer.cancelled:
                heapq.heappop(self._heap)
                continue
            if timer.due_s > now_s:
                return timer.due_s - now_s
            heapq.heappop(self._heap)
            self._fire(timer.activation, TimerFired(timer.name))
            if timer.period_s is None:
                self._by_key.pop((timer.actor_id, timer.name), None)
                self._forget(timer.actor_id)
            else:
                timer.due_s = max(timer.due_s + timer.period_s, now_s)
                timer.sequence = next(self._sequence)
                heapq.heappush(self._heap, timer)
        return None

    async def run(self) -> None:
        while True:
            wait_s = self.fire_due()
            self._changed.clear()
            if wait_s is None:
                await self._changed.wait()
                continue
            try:
                async with asyncio.timeout(wait_s):
                    await self._changed.wait()
            except TimeoutError:
                pass
