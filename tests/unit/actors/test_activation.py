"""Activation: lazy, with state loaded in one read; exactly once under a burst; failures leave
nothing behind; dataclass and chunked state."""

from __future__ import annotations

import asyncio

import pytest
from actor_kit import (
    JOURNAL,
    Add,
    Big,
    Get,
    Mark,
    Tally,
    Whoami,
    clock_of,
    counter_id,
    memory_only,
    running,
    turn_tasks,
    yield_to_loop,
)

from kelpie import limits
from kelpie.actors import ActorId
from kelpie.errors import ActivationFailed, InvalidArgument
from kelpie.storage import Database


async def test_the_first_message_activates_the_actor_with_its_committed_state(db: Database) -> None:
    async with running(db) as first:
        await first.ref(counter_id()).request(Add(41))
    JOURNAL.reset()
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        assert not runtime.is_active(counter_id())
        assert JOURNAL.events == []  # nothing until a message arrives
        assert await ref.request(Add(1)) == 42
        assert JOURNAL.events[0] == ("activate", "test/counter/c-1", 41)  # state loaded before on_activate
        assert runtime.is_active(counter_id())
        statistics = runtime.statistics()
        assert (statistics.activations, statistics.activations_total) == (1, 1)


async def test_a_burst_of_first_messages_activates_exactly_once(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        replies = await asyncio.gather(*(ref.request(Add(1)) for _ in range(30)))
        assert sorted(replies) == list(range(1, 31))
        assert JOURNAL.count("activate") == 1
        assert runtime.statistics().activations_total == 1
        assert (await runtime.read_state(counter_id()))["activations"] == 1
        assert (await runtime.directory.entry(counter_id())).epoch == 1


@memory_only
async def test_a_burst_of_first_sends_activates_exactly_once(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await asyncio.gather(*(ref.send(Add(1)) for _ in range(20)))
        assert await ref.request(Get()) == 20
        assert JOURNAL.count("activate") == 1


async def test_a_failing_on_activate_reaches_the_caller_and_leaves_nothing_activated(db: Database) -> None:
    JOURNAL.activation_failures = 1
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        with pytest.raises(
            ActivationFailed, match="test/counter/c-1 failed to activate: RuntimeError"
        ) as info:
            await ref.request(Add(1))
        assert isinstance(info.value.__cause__, RuntimeError)
        assert not runtime.is_active(counter_id())
        assert runtime.statistics().activations == 0
        assert runtime.statistics().activations_total == 0
        entry = await runtime.directory.entry(counter_id())
        assert entry.node_id is None  # released
        assert await runtime.read_state(counter_id()) is None  # on_activate's write rolled back
        assert JOURNAL.count("add") == 0  # the message never ran
        # The next message retries the activation, with a newer epoch.
        assert await ref.request(Add(1)) == 1
        assert JOURNAL.count("activate") == 2
        state = await runtime.read_state(counter_id())
        assert (state["total"], state["activations"]) == (1, 1)
        assert (await runtime.directory.entry(counter_id())).epoch == 2


@memory_only
async def test_every_caller_of_a_failing_activation_gets_the_failure(db: Database) -> None:
    JOURNAL.activation_failures = 1
    JOURNAL.activate_gate = asyncio.Event()
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        callers = [asyncio.create_task(ref.request(Add(1))) for _ in range(5)]
        await JOURNAL.activate_entered.wait()
        JOURNAL.activate_gate.set()
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(outcome, ActivationFailed) for outcome in outcomes), outcomes
        assert JOURNAL.count("activate") == 1
        assert not runtime.is_active(counter_id())
        assert await ref.request(Add(1)) == 1


@memory_only
async def test_a_timer_set_by_a_failing_on_activate_never_fires(db: Database) -> None:
    JOURNAL.activation_failures = 1
    JOURNAL.timer_in_activate = True
    async with running(db) as runtime:
        with pytest.raises(ActivationFailed):
            await runtime.ref(counter_id()).request(Add(1))
        clock_of(db).advance(10)
        assert runtime.timers.fire_due() is None  # nothing scheduled for the failed activation
        assert turn_tasks() == []
        assert JOURNAL.count("timer") == 0


@memory_only
async def test_each_activation_gets_a_new_epoch(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        _, first_epoch, _ = await ref.request(Whoami())
        clock_of(db).advance(runtime.idle_timeout_s)
        assert await runtime.sweep_idle() == 1
        _, second_epoch, _ = await ref.request(Whoami())
        assert second_epoch == first_epoch + 1
        assert JOURNAL.count("activate") == 2


async def test_dataclass_state_is_stored_and_loaded(db: Database) -> None:
    tally_id = ActorId.of("test", "tallier", "t-1")
    async with running(db) as runtime:
        ref = runtime.ref(tally_id)
        assert await ref.request(Mark("a")) == 1
        assert await ref.request(Mark("b")) == 2
        assert await runtime.read_state(tally_id) == Tally(2, ["a", "b"])
    async with running(db) as runtime:
        assert await runtime.ref(tally_id).request(Mark("c")) == 3
        assert await runtime.read_state(tally_id) == Tally(3, ["a", "b", "c"])


async def test_state_larger_than_one_value_is_chunked_and_shrinks_cleanly(db: Database) -> None:
    chars = 2 * limits.VALUE_BYTES_LIMIT + 1000
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        assert await ref.request(Big(chars)) == chars
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        assert await ref.request(Get()) == 1  # activated from three chunks
        assert len((await runtime.read_state(counter_id()))["big"]) == chars
        await ref.request(Big(10))
        assert (await runtime.read_state(counter_id()))["big"] == "x" * 10


@memory_only
async def test_state_over_its_limit_is_refused_and_rolled_back(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        commits = runtime.statistics().commits
        with pytest.raises(InvalidArgument, match="exceeds the limit of 1000000 bytes"):
            await ref.request(Big(limits.ACTOR_STATE_BYTES_LIMIT + 1))
        assert runtime.statistics().commits == commits
        assert await ref.request(Get()) == 1
        assert "big" not in await runtime.read_state(counter_id())


@memory_only
async def test_a_cancelled_first_caller_does_not_cancel_the_callers_waiting_on_its_activation(
    db: Database,
) -> None:
    JOURNAL.activate_gate = asyncio.Event()
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        first = asyncio.create_task(ref.request(Add(1)))
        await JOURNAL.activate_entered.wait()
        second = asyncio.create_task(ref.request(Add(10)))
        await yield_to_loop()  # the second caller now waits on the activation under way
        JOURNAL.activate_gate = None  # the next activation does not wait
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == 10  # it activated the actor itself
        assert JOURNAL.count("activate") == 2
        entry = await runtime.directory.entry(counter_id())
        assert (entry.node_id, entry.epoch) == (runtime.node_id, 2)
        assert (await runtime.read_state(counter_id()))["total"] == 10
