"""Actors, messages, a parking clock and helpers shared by the actor runtime's unit tests.

The actors report what happened to them in :data:`JOURNAL` (reset before every test by the
autouse fixture in this directory's conftest), since the runtime, not the test, creates them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from kelpie.actors import Actor, ActorContext, ActorId, ActorRuntime, ReminderFired, TimerFired, handler
from kelpie.storage import Backend, CommitRequest, Database, Snapshot
from tests.conftest import ManualClock

memory_only = pytest.mark.parametrize("backend_name", ["memory"])
memory_and_sqlite = pytest.mark.parametrize("backend_name", ["memory", "sqlite"])

# Sleeps shorter than this (transaction retry backoff) advance time like ManualClock's; longer ones
# (the runtime's background loops, given long intervals by ``running``) park for good.
PARK_S_MIN = 1.0
BACKGROUND_SLEEPERS = 3  # heartbeat, idle sweep, reminder poll


class ParkingClock(ManualClock):
    """A :class:`ManualClock` whose sleeps of :data:`PARK_S_MIN` or more never return."""

    def __init__(self) -> None:
        super().__init__()
        self.parked_total = 0
        self._parked_waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def sleep(self, duration_s: float) -> None:
        if duration_s < PARK_S_MIN:
            await super().sleep(duration_s)
            return
        self.parked_total += 1
        for target, waiter in self._parked_waiters:
            if self.parked_total >= target and not waiter.done():
                waiter.set_result(None)
        await asyncio.get_running_loop().create_future()  # cancelled when its runtime stops

    async def wait_parked(self, total: int) -> None:
        """Return once ``total`` sleeps have parked since this clock was made."""
        if self.parked_total >= total:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parked_waiters.append((total, waiter))
        await waiter


@dataclass
class Journal:
    """What the test actors saw, in order; and knobs the tests turn to make them misbehave."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    activation_failures: int = 0  # fail this many on_activate calls
    reminder_failures: int = 0  # fail this many ReminderFired turns
    activate_entered: asyncio.Event = field(default_factory=asyncio.Event)
    activate_gate: asyncio.Event | None = None  # on_activate waits for it when set
    timer_in_activate: bool = False  # on_activate sets a timer (before failing, if it fails)
    deactivate_entered: asyncio.Event = field(default_factory=asyncio.Event)
    deactivate_gate: asyncio.Event | None = None  # on_deactivate waits for it when set

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def record(self, *event: Any) -> None:
        self.events.append(event)

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events if event[0] == kind)

    def of_kind(self, kind: str) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == kind]


JOURNAL = Journal()


# --- messages ----------------------------------------------------------------------------------------


@dataclass
class Add:
    amount: int


@dataclass
class Get:
    pass


@dataclass
class Put:
    key: bytes
    value: bytes


@dataclass
class Delete:
    key: bytes


@dataclass
class Read:
    key: bytes


@dataclass
class Items:
    prefix: bytes


@dataclass
class PutThenItems:
    """Writes ``key``, deletes ``deleted``, then lists ``prefix``: read-your-writes in one turn."""

    key: bytes
    value: bytes
    deleted: bytes
    prefix: bytes


@dataclass
class Fail:
    """Adds ``amount`` and writes ``key`` to ctx.kv, then raises."""

    amount: int
    key: bytes


@dataclass
class Hold:
    """Adds ``amount``, writes ctx.kv ``b"held"``, sets ``entered``, then waits for ``release``."""

    amount: int
    release: asyncio.Event
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    label: str = "hold"


@dataclass
class Note:
    """Records its start, yields to the loop, records its end."""

    label: str


@dataclass
class CheckpointThenFail:
    first: int
    second: int


@dataclass
class ReplyObject:
    amount: int


@dataclass
class StoreObject:
    amount: int


@dataclass
class Big:
    chars: int


@dataclass
class Ask:
    target: ActorId
    amount: int


@dataclass
class Whoami:
    pass


@dataclass
class RaiseTimeout:
    pass


@dataclass
class SetTimer:
    name: str
    delay_s: float
    period_s: float | None = None


@dataclass
class CancelTimer:
    name: str


@dataclass
class SetReminder:
    name: str
    delay_s: float
    period_s: float | None = None
    then_fail: bool = False


@dataclass
class CancelReminder:
    name: str


@dataclass
class SetState:
    value: Any


# --- actors ------------------------------------------------------------------------------------------


class Counter(Actor):
    """A counter with a key-value side, lifecycle hooks, timers and reminders, all journaled."""

    type_name = "counter"

    def initial_state(self) -> dict[str, Any]:
        return {"total": 0}

    async def on_activate(self, ctx: ActorContext) -> None:
        JOURNAL.record("activate", str(ctx.id), ctx.state.get("total"))
        JOURNAL.activate_entered.set()
        ctx.state["activations"] = ctx.state.get("activations", 0) + 1
        if JOURNAL.timer_in_activate:
            ctx.set_timer("from-activate", 5.0)
        if JOURNAL.activate_gate is not None:
            await JOURNAL.activate_gate.wait()
        if JOURNAL.activation_failures > 0:
            JOURNAL.activation_failures -= 1
            raise RuntimeError("on_activate refuses")

    async def on_deactivate(self, ctx: ActorContext) -> None:
        JOURNAL.record("deactivate", str(ctx.id), ctx.state.get("total"))
        JOURNAL.deactivate_entered.set()
        ctx.state["farewells"] = ctx.state.get("farewells", 0) + 1
        if JOURNAL.deactivate_gate is not None:
            await JOURNAL.deactivate_gate.wait()

    async def on_idle(self, ctx: ActorContext) -> None:
        JOURNAL.record("idle", str(ctx.id))

    @handler
    async def add(self, ctx: ActorContext, message: Add) -> int:
        ctx.state["total"] += message.amount
        JOURNAL.record("add", str(ctx.id), message.amount)
        total: int = ctx.state["total"]
        return total

    @handler
    async def get(self, ctx: ActorContext, message: Get) -> int:
        total: int = ctx.state["total"]
        return total

    @handler
    async def put(self, ctx: ActorContext, message: Put) -> None:
        ctx.kv.set(message.key, message.value)

    @handler
    async def delete(self, ctx: ActorContext, message: Delete) -> None:
        ctx.kv.delete(message.key)

    @handler
    async def read(self, ctx: ActorContext, message: Read) -> bytes | None:
        return await ctx.kv.get(message.key)

    @handler
    async def items(self, ctx: ActorContext, message: Items) -> list[list[bytes]]:
        return [[key, value] for key, value in await ctx.kv.items(prefix=message.prefix)]

    @handler
    async def put_then_items(self, ctx: ActorContext, message: PutThenItems) -> list[Any]:
        ctx.kv.set(message.key, message.value)
        ctx.kv.delete(message.deleted)
        seen = await ctx.kv.get(message.key)
        listed = [[key, value] for key, value in await ctx.kv.items(prefix=message.prefix)]
        return [seen, listed]

    @handler
    async def fail(self, ctx: ActorContext, message: Fail) -> None:
        ctx.state["total"] += message.amount
        ctx.kv.set(message.key, b"written by a failing turn")
        raise ValueError("the handler gives up")

    @handler
    async def hold(self, ctx: ActorContext, message: Hold) -> int:
        ctx.state["total"] += message.amount
        ctx.kv.set(b"held", b"written by a held turn")
        JOURNAL.record("start", message.label)
        message.entered.set()
        await message.release.wait()
        JOURNAL.record("end", message.label)
        total: int = ctx.state["total"]
        return total

    @handler
    async def note(self, ctx: ActorContext, message: Note) -> str:
        JOURNAL.record("start", message.label)
        await asyncio.sleep(0)  # a chance to interleave, were the runtime reentrant
        JOURNAL.record("end", message.label)
        return message.label

    @handler
    async def checkpoint_then_fail(self, ctx: ActorContext, message: CheckpointThenFail) -> None:
        ctx.state["total"] += message.first
        ctx.kv.set(b"before", b"1")
        await ctx.checkpoint()
        ctx.state["total"] += message.second
        ctx.kv.set(b"after", b"2")
        raise ValueError("fails after the checkpoint")

    @handler
    async def reply_object(self, ctx: ActorContext, message: ReplyObject) -> object:
        ctx.state["total"] += message.amount
        ctx.kv.set(b"reply", b"object")
        return object()

    @handler
    async def store_object(self, ctx: ActorContext, message: StoreObject) -> int:
        ctx.state["total"] += message.amount
        ctx.state["bad"] = object()
        ctx.kv.set(b"state", b"object")
        return 1

    @handler
    async def big(self, ctx: ActorContext, message: Big) -> int:
        ctx.state["big"] = "x" * message.chars
        return message.chars

    @handler
    async def ask(self, ctx: ActorContext, message: Ask) -> int:
        reply: int = await ctx.ref(message.target).request(Add(message.amount))
        ctx.state["asked"] = reply
        return reply

    @handler
    async def whoami(self, ctx: ActorContext, message: Whoami) -> list[Any]:
        return [str(ctx.id), ctx.epoch, ctx.env.clock.wall_s()]

    @handler
    async def raise_timeout(self, ctx: ActorContext, message: RaiseTimeout) -> None:
        ctx.state["total"] += 1
        raise TimeoutError("an upstream call timed out")

    @handler
    async def set_timer(self, ctx: ActorContext, message: SetTimer) -> None:
        ctx.set_timer(message.name, message.delay_s, period_s=message.period_s)

    @handler
    async def cancel_timer(self, ctx: ActorContext, message: CancelTimer) -> None:
        ctx.cancel_timer(message.name)

    @handler
    async def timer_fired(self, ctx: ActorContext, message: TimerFired) -> None:
        JOURNAL.record("timer", message.name)
        ctx.state["timers"] = ctx.state.get("timers", 0) + 1

    @handler
    async def set_reminder(self, ctx: ActorContext, message: SetReminder) -> None:
        ctx.set_reminder(message.name, message.delay_s, period_s=message.period_s)
        if message.then_fail:
            raise RuntimeError("fails after setting a reminder")

    @handler
    async def cancel_reminder(self, ctx: ActorContext, message: CancelReminder) -> None:
        ctx.cancel_reminder(message.name)

    @handler
    async def reminder_fired(self, ctx: ActorContext, message: ReminderFired) -> None:
        JOURNAL.record("reminder", str(ctx.id), message.name, message.due_wall_s)
        ctx.state["reminders"] = ctx.state.get("reminders", 0) + 1
        if JOURNAL.reminder_failures > 0:
            JOURNAL.reminder_failures -= 1
            raise RuntimeError("the reminder turn fails")

    @handler
    async def set_state(self, ctx: ActorContext, message: SetState) -> None:
        ctx.state = message.value


@dataclass
class Tally:
    count: int = 0
    names: list[str] = field(default_factory=list)


@dataclass
class Mark:
    name: str


class Tallier(Actor):
    """State is a dataclass."""

    type_name = "tallier"
    state_type = Tally

    @handler
    async def mark(self, ctx: ActorContext, message: Mark) -> int:
        ctx.state.count += 1
        ctx.state.names.append(message.name)
        count: int = ctx.state.count
        return count

    @handler
    async def set_state(self, ctx: ActorContext, message: SetState) -> None:
        ctx.state = message.value


class Plain(Actor):
    """Handles Add only: no reminders, no timers."""

    type_name = "plain"

    @handler
    async def add(self, ctx: ActorContext, message: Add) -> int:
        ctx.state["total"] = ctx.state.get("total", 0) + message.amount
        total: int = ctx.state["total"]
        return total

    @handler
    async def set_reminder(self, ctx: ActorContext, message: SetReminder) -> None:
        ctx.set_reminder(message.name, message.delay_s, period_s=message.period_s)

    @handler
    async def set_timer(self, ctx: ActorContext, message: SetTimer) -> None:
        ctx.set_timer(message.name, message.delay_s, period_s=message.period_s)


ACTOR_TYPES: list[type[Actor]] = [Counter, Tallier, Plain]


def counter_id(key: str = "c-1") -> ActorId:
    return ActorId.of("test", "counter", key)


def make_runtime(db: Database, **options: Any) -> ActorRuntime:
    """A runtime whose background loops park on a :class:`ParkingClock` (long intervals)."""
    settings: dict[str, Any] = {
        "actor_types": ACTOR_TYPES,
        "heartbeat_interval_s": 3600.0,
        "reminder_poll_interval_s": 3600.0,
        "failure_timeout_s": 30.0,
        "idle_timeout_s": 900.0,
        "idle_notice_s": 300.0,
    }
    settings.update(options)
    return ActorRuntime(db, **settings)


@asynccontextmanager
async def running(db: Database, **options: Any) -> AsyncIterator[ActorRuntime]:
    """A started runtime whose background loops have all parked (so none acts behind the test)."""
    clock = db.env.clock
    assert isinstance(clock, ParkingClock), clock
    parked_before = clock.parked_total
    async with make_runtime(db, **options) as runtime:
        await clock.wait_parked(parked_before + BACKGROUND_SLEEPERS)
        yield runtime


async def until(condition: Callable[[], bool], *, yields_limit: int = 100) -> None:
    """Yield to the loop until ``condition()`` holds (for in-loop progress only, never for I/O)."""
    for _ in range(yields_limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition still false after {yields_limit} yields")


async def yield_to_loop(times: int = 20) -> None:
    """Let every task that can run without I/O run: to show something did *not* happen."""
    for _ in range(times):
        await asyncio.sleep(0)


def turn_tasks() -> list[asyncio.Task[Any]]:
    """Live drainer tasks (the runtime names them ``turns <actor id>``)."""
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("turns ") and not task.done()]


def clock_of(db: Database) -> ParkingClock:
    clock = db.env.clock
    assert isinstance(clock, ParkingClock), clock
    return clock


class GatedBackend:
    """Wraps a backend; while :meth:`hold` is in force, commits wait at the gate; while
    ``snapshot_error`` is set, reads fail with it."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self._open: asyncio.Event | None = None
        self.commit_waiting = asyncio.Event()
        self.commits = 0
        self.snapshot_error: Exception | None = None  # raised by every read while set

    @property
    def name(self) -> str:
        return self.inner.name

    def hold(self) -> None:
        self._open = asyncio.Event()
        self.commit_waiting = asyncio.Event()

    def release(self) -> None:
        assert self._open is not None
        self._open.set()
        self._open = None

    async def open_snapshot(self) -> Snapshot:
        if self.snapshot_error is not None:
            raise self.snapshot_error
        return await self.inner.open_snapshot()

    async def commit(self, request: CommitRequest) -> int:
        gate = self._open
        if gate is not None:
            self.commit_waiting.set()
            await gate.wait()
        version = await self.inner.commit(request)
        self.commits += 1
        return version

    async def close(self) -> None:
        """The wrapped backend belongs to the ``db`` fixture, which closes it."""


def gated(db: Database) -> tuple[Database, GatedBackend]:
    backend = GatedBackend(db.backend)
    return Database(backend, db.env, url=db.url), backend
