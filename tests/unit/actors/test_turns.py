"""Turns: request and send, FIFO and non-reentrant, bounded mailboxes, rollback, timeouts, the
context a handler sees, reads without a turn, and statistics."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from actor_kit import (
    JOURNAL,
    Add,
    Ask,
    Delete,
    Fail,
    Get,
    Hold,
    Items,
    Note,
    Put,
    PutThenItems,
    RaiseTimeout,
    Read,
    Whoami,
    clock_of,
    counter_id,
    memory_and_sqlite,
    memory_only,
    running,
    turn_tasks,
    until,
)

from kelpie.actors import RuntimeStatistics
from kelpie.errors import HandlerFailed, InvalidArgument, Overloaded, RequestTimedOut, TurnTimedOut
from kelpie.storage import Database

# --- request and send ----------------------------------------------------------------------------------


async def test_request_returns_the_reply_and_send_returns_once_queued(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        assert await ref.request(Add(2)) == 2
        assert await ref.send(Add(3)) is None
        assert await ref.request(Get()) == 5
        assert JOURNAL.of_kind("add") == [("add", "test/counter/c-1", 2), ("add", "test/counter/c-1", 3)]


@memory_only
async def test_send_to_a_busy_actor_queues_and_runs_later(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        release = asyncio.Event()
        hold = Hold(1, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        await ref.send(Add(10))
        assert JOURNAL.count("add") == 0  # accepted, not yet run
        assert runtime.statistics().queued_messages == 1
        release.set()
        assert await held == 1
        assert await ref.request(Get()) == 11


@memory_only
async def test_refs_are_cheap_and_activate_nothing(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        assert ref.actor_id == counter_id()
        assert "test/counter/c-1" in repr(ref)
        assert not runtime.is_active(counter_id())
        assert runtime.statistics().activations == 0


# --- one turn at a time, in order ---------------------------------------------------------------------


@memory_only
async def test_turns_run_one_at_a_time_in_arrival_order(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        release = asyncio.Event()
        hold = Hold(0, release, label="a")
        first = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        b = asyncio.create_task(ref.request(Note("b")))
        c = asyncio.create_task(ref.request(Note("c")))
        await until(lambda: runtime.statistics().queued_messages == 2)
        await ref.send(Note("d"))
        e = asyncio.create_task(ref.request(Note("e")))
        await until(lambda: runtime.statistics().queued_messages == 4)
        # Nothing queued starts while "a" awaits: the actor is not reentrant.
        assert JOURNAL.events[-1] == ("start", "a")
        release.set()
        assert await asyncio.gather(first, b, c, e) == [0, "b", "c", "e"]
        labels = [event for event in JOURNAL.events if event[0] in ("start", "end")]
        assert labels == [(edge, label) for label in "abcde" for edge in ("start", "end")]


@memory_only
async def test_a_handler_awaiting_another_actor_does_not_let_its_own_mailbox_advance(db: Database) -> None:
    async with running(db) as runtime:
        caller, callee = runtime.ref(counter_id("caller")), runtime.ref(counter_id("callee"))
        release = asyncio.Event()
        hold = Hold(0, release, label="callee")
        callee_held = asyncio.create_task(callee.request(hold))
        await hold.entered.wait()
        asking = asyncio.create_task(caller.request(Ask(counter_id("callee"), 5)))
        await until(lambda: runtime.statistics().queued_messages == 1)  # the Ask waits at the callee
        await caller.send(Note("caller-note"))
        await until(lambda: runtime.statistics().queued_messages == 2)
        assert ("start", "caller-note") not in JOURNAL.events
        release.set()
        assert await asyncio.gather(callee_held, asking) == [0, 5]
        assert await caller.request(Note("last")) == "last"
        assert JOURNAL.events.index(("start", "caller-note")) > JOURNAL.events.index(
            ("add", "test/counter/callee", 5)
        )


@memory_only
async def test_an_idle_actor_owns_no_task(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))  # inline: no task
        assert turn_tasks() == []
        await ref.send(Add(1))  # a drainer runs it...
        assert len(turn_tasks()) == 1
        assert await ref.request(Get()) == 2
        assert turn_tasks() == []  # ...and exits once the mailbox is empty
        assert runtime.statistics().busy_activations == 0


# --- bounded mailbox ----------------------------------------------------------------------------------


@memory_only
async def test_a_full_mailbox_refuses_with_overloaded(db: Database) -> None:
    async with running(db, mailbox_limit=2) as runtime:
        ref = runtime.ref(counter_id())
        release = asyncio.Event()
        hold = Hold(1, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        await ref.send(Add(10))
        await ref.send(Add(10))
        with pytest.raises(Overloaded, match=r"mailbox is full \(2 messages\)") as info:
            await ref.send(Add(100))
        assert info.value.retryable
        with pytest.raises(Overloaded):
            await ref.request(Add(100))
        statistics = runtime.statistics()
        assert (statistics.queued_messages, statistics.queue_depth_max) == (2, 2)
        release.set()
        assert await held == 1
        assert await ref.request(Get()) == 21  # the refused messages never ran


# --- failed turns roll back -------------------------------------------------------------------------


async def test_a_handler_exception_rolls_the_turn_back_and_the_actor_stays_usable(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(5))
        await ref.request(Put(b"kept", b"yes"))
        before = runtime.statistics()
        with pytest.raises(HandlerFailed, match="ValueError: the handler gives up") as info:
            await ref.request(Fail(100, b"dropped"))
        assert isinstance(info.value.__cause__, ValueError)
        after = runtime.statistics()
        assert after.commits == before.commits
        assert after.turns_failed == before.turns_failed + 1
        assert runtime.is_active(counter_id())
        assert await ref.request(Get()) == 5
        assert await ref.request(Read(b"dropped")) is None
        assert await ref.request(Read(b"kept")) == b"yes"
        assert (await runtime.read_state(counter_id()))["total"] == 5
        assert await ref.request(Add(1)) == 6


@memory_only
async def test_a_timeout_error_raised_by_the_handler_is_a_handler_failure(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        with pytest.raises(HandlerFailed, match="TimeoutError: an upstream call timed out"):
            await ref.request(RaiseTimeout())
        assert await ref.request(Get()) == 0


@memory_and_sqlite
async def test_a_turn_past_its_time_limit_is_aborted_and_rolled_back(db: Database) -> None:
    async with running(db, turn_timeout_s=0.05) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(5))
        before = runtime.statistics()
        never = asyncio.Event()
        with pytest.raises(TurnTimedOut, match=r"ran past 0.05 s"):
            await ref.request(Hold(100, never))
        assert runtime.statistics().commits == before.commits
        assert await ref.request(Get()) == 5
        assert await ref.request(Read(b"held")) is None
        assert (await runtime.read_state(counter_id()))["total"] == 5
        assert await ref.request(Add(1)) == 6


@memory_only
async def test_a_queued_turn_past_its_time_limit_fails_its_caller_and_the_next_runs(db: Database) -> None:
    async with running(db, turn_timeout_s=0.05) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        await ref.send(Note("first"))  # a drainer runs the mailbox from here on
        never = asyncio.Event()
        stuck = asyncio.create_task(ref.request(Hold(100, never, label="stuck")))
        after = asyncio.create_task(ref.request(Add(10)))
        with pytest.raises(TurnTimedOut):
            await stuck
        assert await after == 11
        assert await ref.request(Read(b"held")) is None


@memory_only
async def test_a_request_timeout_shorter_than_the_turn_aborts_the_turn(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(5))
        never = asyncio.Event()
        with pytest.raises(RequestTimedOut, match=r"within 0\.05 s; the turn was rolled back"):
            await ref.request(Hold(100, never), timeout_s=0.05)
        assert await ref.request(Get()) == 5
        assert await ref.request(Read(b"held")) is None


@memory_only
async def test_a_request_timing_out_in_the_mailbox_leaves_the_message_to_run(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        release = asyncio.Event()
        hold = Hold(1, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        with pytest.raises(RequestTimedOut, match="still queued and may run"):
            await ref.request(Add(7), timeout_s=0.05)
        release.set()
        assert await held == 1
        assert await ref.request(Get()) == 8


@memory_only
async def test_a_reply_within_the_request_timeout_is_returned(db: Database) -> None:
    async with running(db) as runtime:
        assert await runtime.ref(counter_id()).request(Add(3), timeout_s=60) == 3


@memory_only
@pytest.mark.parametrize("timeout_s", [0, -1, "1", True, float("nan"), 10**8])
async def test_a_bad_request_timeout_is_refused(db: Database, timeout_s: object) -> None:
    async with running(db) as runtime:
        with pytest.raises(InvalidArgument, match="timeout_s must be a positive number"):
            await runtime.ref(counter_id()).request(Add(1), timeout_s=timeout_s)  # type: ignore[arg-type]
        assert not runtime.is_active(counter_id())


# --- the context ----------------------------------------------------------------------------------------


@memory_only
async def test_the_context_gives_id_epoch_env_and_refs(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        identity, epoch, wall_s = await ref.request(Whoami())
        assert identity == "test/counter/c-1"
        assert epoch == 1
        assert wall_s == clock_of(db).wall_s()
        assert await ref.request(Ask(counter_id("other"), 4)) == 4
        assert await runtime.ref(counter_id("other")).request(Get()) == 4
        assert (await runtime.read_state(counter_id()))["asked"] == 4


async def test_the_kv_view_reads_its_own_writes_and_commits_with_the_turn(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Put(b"p/1", b"one"))
        await ref.request(Put(b"p/3", b"three"))
        await ref.request(Put(b"q", b"elsewhere"))
        seen, listed = await ref.request(PutThenItems(b"p/2", b"two", b"p/3", b"p/"))
        assert seen == b"two"
        assert listed == [[b"p/1", b"one"], [b"p/2", b"two"]]
        assert await ref.request(Items(b"")) == [[b"p/1", b"one"], [b"p/2", b"two"], [b"q", b"elsewhere"]]
        await ref.request(Put(b"p/1", b"uno"))
        assert await ref.request(Read(b"p/1")) == b"uno"
        await ref.request(Delete(b"q"))
        assert await ref.request(Read(b"q")) is None
        # Another actor's view is its own.
        assert await runtime.ref(counter_id("other")).request(Items(b"")) == []


# --- reads without a turn, and statistics -----------------------------------------------------------


async def test_read_state_returns_committed_state_without_waiting_behind_a_turn(db: Database) -> None:
    async with running(db) as runtime:
        assert await runtime.read_state(counter_id()) is None  # never committed
        ref = runtime.ref(counter_id())
        await ref.request(Add(3))
        release = asyncio.Event()
        hold = Hold(10, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        state = await runtime.read_state(counter_id())
        assert state["total"] == 3
        assert not held.done()
        release.set()
        assert await held == 13
        assert (await runtime.read_state(counter_id()))["total"] == 13


@memory_only
async def test_statistics_are_a_frozen_snapshot(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        empty = runtime.statistics()
        assert isinstance(empty, RuntimeStatistics)
        assert (empty.activations, empty.turns, empty.commits) == (0, 0, 0)
        assert empty.node_id == runtime.node_id
        with pytest.raises(dataclasses.FrozenInstanceError):
            empty.turns = 5  # type: ignore[misc]
        release = asyncio.Event()
        hold = Hold(1, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        await ref.send(Add(1))
        await ref.send(Add(1))
        busy = runtime.statistics()
        assert (busy.activations, busy.busy_activations, busy.queued_messages) == (1, 1, 2)
        assert busy.activations_total == 1
        release.set()
        await held
        assert await ref.request(Get()) == 3
        done = runtime.statistics()
        assert (done.busy_activations, done.queued_messages, done.queue_depth_max) == (0, 0, 2)
        assert done.turns == 4  # hold, two adds, get (on_activate is a hook, not a turn)
        assert done.commits == 4  # on_activate, hold, two adds; the get wrote nothing
        assert (done.turns_failed, done.conflicts, done.fenced, done.retired) == (0, 0, 0, 0)
        assert (empty.activations, empty.turns, empty.commits) == (0, 0, 0)  # unchanged
