"""Idle deactivation, graceful shutdown, volatile timers and durable reminders."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from actor_kit import (
    JOURNAL,
    Add,
    CancelReminder,
    CancelTimer,
    Get,
    Hold,
    SetReminder,
    SetTimer,
    clock_of,
    counter_id,
    gated,
    memory_and_sqlite,
    memory_only,
    running,
    turn_tasks,
    yield_to_loop,
)

from kelpie.errors import ActorActiveElsewhere, HandlerFailed, RuntimeStopped, StorageUnavailable
from kelpie.storage import Database

# --- idle deactivation --------------------------------------------------------------------------------


async def test_an_idle_actor_is_noticed_once_then_deactivated_with_its_state_committed(db: Database) -> None:
    clock = clock_of(db)
    async with running(db, idle_timeout_s=900, idle_notice_s=300) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(5))
        clock.advance(299)
        assert await runtime.sweep_idle() == 0
        assert JOURNAL.count("idle") == 0
        clock.advance(1)
        assert await runtime.sweep_idle() == 0
        assert JOURNAL.count("idle") == 1
        clock.advance(300)
        assert await runtime.sweep_idle() == 0
        assert JOURNAL.count("idle") == 1  # once per idle spell
        assert JOURNAL.count("deactivate") == 0
        clock.advance(300)
        assert await runtime.sweep_idle() == 1
        assert JOURNAL.of_kind("deactivate") == [("deactivate", "test/counter/c-1", 5)]
        assert not runtime.is_active(counter_id())
        statistics = runtime.statistics()
        assert (statistics.activations, statistics.deactivations_total) == (0, 1)
        state = await runtime.read_state(counter_id())
        assert (state["total"], state["farewells"]) == (5, 1)  # on_deactivate's write committed
        assert (await runtime.directory.entry(counter_id())).node_id is None
        # The next message activates it again, from what was committed.
        assert await ref.request(Add(1)) == 6
        assert JOURNAL.of_kind("activate")[-1] == ("activate", "test/counter/c-1", 5)
        assert (await runtime.read_state(counter_id()))["activations"] == 2


@memory_only
async def test_a_turn_restarts_the_idle_clock(db: Database) -> None:
    clock = clock_of(db)
    async with running(db, idle_timeout_s=900, idle_notice_s=300) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        clock.advance(800)
        assert await runtime.sweep_idle() == 0
        assert JOURNAL.count("idle") == 1
        await ref.request(Add(1))
        clock.advance(800)
        assert await runtime.sweep_idle() == 0
        assert JOURNAL.count("idle") == 2  # a new idle spell, a new notice
        clock.advance(100)
        assert await runtime.sweep_idle() == 1


@memory_only
async def test_a_busy_actor_is_not_deactivated(db: Database) -> None:
    clock = clock_of(db)
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        release = asyncio.Event()
        hold = Hold(1, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        clock.advance(runtime.idle_timeout_s * 2)
        assert await runtime.sweep_idle() == 0
        assert runtime.is_active(counter_id())
        release.set()
        assert await held == 1
        assert await runtime.sweep_idle() == 0  # its turn just ended: not idle


@memory_only
async def test_a_message_arriving_during_deactivation_activates_afresh_after_it(db: Database) -> None:
    clock = clock_of(db)
    JOURNAL.deactivate_gate = asyncio.Event()
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        clock.advance(runtime.idle_timeout_s)
        sweeping = asyncio.create_task(runtime.sweep_idle())
        await JOURNAL.deactivate_entered.wait()
        late = asyncio.create_task(ref.request(Add(10)))
        await yield_to_loop()
        assert not late.done()  # it waits for the deactivation to finish
        JOURNAL.deactivate_gate.set()
        JOURNAL.deactivate_gate = None
        assert await sweeping == 1
        assert await late == 11
        assert JOURNAL.count("activate") == 2
        assert (await runtime.read_state(counter_id()))["farewells"] == 1


# --- shutdown ---------------------------------------------------------------------------------------------


async def test_leaving_the_runtime_deactivates_every_actor_and_commits(db: Database) -> None:
    ids = [counter_id(f"c-{number}") for number in range(3)]
    async with running(db) as runtime:
        for number, actor_id in enumerate(ids):
            await runtime.ref(actor_id).request(Add(number))
    assert sorted(event[1] for event in JOURNAL.of_kind("deactivate")) == [str(actor_id) for actor_id in ids]
    assert runtime.statistics().activations == 0
    for number, actor_id in enumerate(ids):
        state = await runtime.read_state(actor_id)
        assert (state["total"], state["farewells"]) == (number, 1)
        assert (await runtime.directory.entry(actor_id)).node_id is None
    with pytest.raises(RuntimeStopped):
        await runtime.ref(ids[0]).request(Get())


@memory_only
async def test_shutdown_drains_the_running_and_queued_turns_first(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        release = asyncio.Event()
        hold = Hold(1, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        await ref.send(Add(10))
        stopping = asyncio.create_task(runtime.shutdown())
        await yield_to_loop()
        assert not stopping.done()  # it waits for the turns
        assert JOURNAL.count("deactivate") == 0
        with pytest.raises(RuntimeStopped):
            await runtime.ref(counter_id("newcomer")).request(Add(1))
        release.set()
        assert await held == 1
        await stopping
        kinds = [event[0] for event in JOURNAL.events if event[0] != "start"]
        assert kinds == ["activate", "end", "add", "deactivate"]
        assert (await runtime.read_state(counter_id()))["total"] == 11
        with pytest.raises(RuntimeStopped):
            await ref.send(Add(1))


@memory_only
async def test_shutdown_waits_for_an_activation_under_way_and_deactivates_it(db: Database) -> None:
    JOURNAL.activate_gate = asyncio.Event()
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        first = asyncio.create_task(ref.request(Add(1)))
        await JOURNAL.activate_entered.wait()
        second = asyncio.create_task(ref.request(Add(2)))
        stopping = asyncio.create_task(runtime.shutdown())
        await yield_to_loop()
        assert not stopping.done()  # it waits for the activation
        JOURNAL.activate_gate.set()
        assert await first == 1
        assert await second == 3  # it arrived before the shutdown
        await stopping
        assert not runtime.is_active(counter_id())
        assert JOURNAL.count("deactivate") == 1
        assert (await runtime.read_state(counter_id()))["farewells"] == 1


@memory_only
async def test_an_error_inside_the_runtime_block_propagates_as_itself(db: Database) -> None:
    with pytest.raises(LookupError, match="from the body"):
        async with running(db) as runtime:
            await runtime.ref(counter_id()).request(Add(1))
            raise LookupError("from the body")
    assert JOURNAL.count("deactivate") == 1  # and the runtime still shut down cleanly


# --- timers ---------------------------------------------------------------------------------------------


@memory_and_sqlite
async def test_a_timer_fires_as_a_turn_of_its_own(db: Database) -> None:
    clock = clock_of(db)
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(SetTimer("once", 5))
        clock.advance(4.5)
        assert runtime.timers.fire_due() == pytest.approx(0.5)
        assert turn_tasks() == []
        clock.advance(0.5)
        assert runtime.timers.fire_due() is None  # fired, and one-shot
        assert await ref.request(Get()) == 0  # queued behind the timer's turn
        assert JOURNAL.of_kind("timer") == [("timer", "once")]
        assert (await runtime.read_state(counter_id()))["timers"] == 1


@memory_only
async def test_a_periodic_timer_repeats_until_cancelled(db: Database) -> None:
    clock = clock_of(db)
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(SetTimer("tick", 5, period_s=10))
        clock.advance(5)
        assert runtime.timers.fire_due() == pytest.approx(10)
        await ref.request(Get())
        clock.advance(10)
        runtime.timers.fire_due()
        await ref.request(Get())
        assert JOURNAL.count("timer") == 2
        await ref.request(CancelTimer("tick"))
        clock.advance(100)
        assert runtime.timers.fire_due() is None
        await ref.request(Get())
        assert JOURNAL.count("timer") == 2


@memory_only
async def test_a_timer_waits_for_the_running_turn(db: Database) -> None:
    clock = clock_of(db)
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(SetTimer("t", 1))
        release = asyncio.Event()
        hold = Hold(1, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        clock.advance(1)
        runtime.timers.fire_due()
        assert runtime.statistics().queued_messages == 1
        assert JOURNAL.count("timer") == 0
        release.set()
        await held
        await ref.request(Get())
        kinds = [event[0] for event in JOURNAL.events]
        assert kinds.index("end") < kinds.index("timer")


@memory_only
async def test_timers_die_with_their_activation(db: Database) -> None:
    clock = clock_of(db)
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(SetTimer("late", 2000))
        clock.advance(runtime.idle_timeout_s)
        assert await runtime.sweep_idle() == 1
        clock.advance(2000)
        assert runtime.timers.fire_due() is None
        assert turn_tasks() == []
        assert not runtime.is_active(counter_id())  # a timer never activates an actor
        assert JOURNAL.count("timer") == 0


# --- reminders ------------------------------------------------------------------------------------------


async def test_a_reminder_survives_a_restart_and_activates_its_actor(
    db: Database, open_twin: Callable[[], Awaitable[Database]]
) -> None:
    clock = clock_of(db)
    async with running(db) as first:
        await first.ref(counter_id()).request(SetReminder("wake", 60))
        due_wall_s = clock.wall_s() + 60
    assert not first.is_active(counter_id())
    await db.close()  # the first process is gone; a new one opens the store
    async with running(await open_twin()) as second:
        assert await second.reminders.poll_once() == 0  # not yet due
        assert not second.is_active(counter_id())
        clock.advance(60)
        assert await second.reminders.poll_once() == 1
        assert second.is_active(counter_id())
        assert JOURNAL.of_kind("reminder") == [("reminder", "test/counter/c-1", "wake", due_wall_s)]
        assert (await second.read_state(counter_id()))["reminders"] == 1
        assert await second.reminders.poll_once() == 0  # one-shot: removed by the turn's commit


@memory_and_sqlite
async def test_a_periodic_reminder_advances_past_now(db: Database) -> None:
    clock = clock_of(db)
    async with running(db) as runtime:
        start_s = clock.wall_s()
        await runtime.ref(counter_id()).request(SetReminder("tick", 10, period_s=60))
        clock.advance(10)
        assert await runtime.reminders.poll_once() == 1
        assert await runtime.reminders.poll_once() == 0
        clock.advance(59)
        assert await runtime.reminders.poll_once() == 0
        clock.advance(1)
        assert await runtime.reminders.poll_once() == 1
        clock.advance(590)  # nine periods missed: delivered once, then scheduled after now
        assert await runtime.reminders.poll_once() == 1
        assert await runtime.reminders.poll_once() == 0
        dues = [event[3] - start_s for event in JOURNAL.of_kind("reminder")]
        assert dues == [10, 70, 130]
        clock.advance(10)
        assert await runtime.reminders.poll_once() == 1
        assert JOURNAL.of_kind("reminder")[-1][3] - start_s == 670


@memory_only
async def test_a_cancelled_reminder_never_fires(db: Database) -> None:
    clock = clock_of(db)
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(SetReminder("once", 10))
        await ref.request(SetReminder("tick", 10, period_s=10))
        await ref.request(CancelReminder("once"))
        clock.advance(10)
        assert await runtime.reminders.poll_once() == 1
        await ref.request(CancelReminder("tick"))
        clock.advance(100)
        assert await runtime.reminders.poll_once() == 0
        assert [event[2] for event in JOURNAL.of_kind("reminder")] == ["tick"]


@memory_only
async def test_a_reminder_whose_turn_fails_fires_again(db: Database) -> None:
    clock = clock_of(db)
    JOURNAL.reminder_failures = 1
    async with running(db) as runtime:
        await runtime.ref(counter_id()).request(SetReminder("retry", 5))
        clock.advance(5)
        assert await runtime.reminders.poll_once() == 1  # delivered; its turn failed
        assert await runtime.reminders.poll_once() == 1  # so it is still due
        assert await runtime.reminders.poll_once() == 0
        assert JOURNAL.count("reminder") == 2
        assert (await runtime.read_state(counter_id()))["reminders"] == 1  # the failed turn rolled back


@memory_only
async def test_a_reminder_set_in_a_failed_turn_is_not_set(db: Database) -> None:
    clock = clock_of(db)
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(SetReminder("kept", 5))
        with pytest.raises(HandlerFailed):
            await ref.request(SetReminder("dropped", 5, then_fail=True))
        clock.advance(5)
        assert await runtime.reminders.poll_once() == 1
        assert [event[2] for event in JOURNAL.of_kind("reminder")] == ["kept"]


@memory_only
async def test_a_reminder_for_an_actor_active_elsewhere_is_left_to_its_owner(
    db: Database, open_twin: Callable[[], Awaitable[Database]]
) -> None:
    clock = clock_of(db)
    twin = await open_twin()
    async with running(db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        await a.ref(counter_id()).request(SetReminder("wake", 5))
        clock.advance(5)
        assert await b.reminders.poll_once() == 1  # tried: active on node-a, so left alone
        assert not b.is_active(counter_id())
        assert JOURNAL.count("reminder") == 0
        assert await a.reminders.poll_once() == 1
        assert JOURNAL.count("reminder") == 1
        with pytest.raises(ActorActiveElsewhere):
            await b.ref(counter_id()).request(Get())


@memory_only
async def test_a_failed_reminder_poll_does_not_stop_the_runtime(db: Database) -> None:
    gated_db, backend = gated(db)
    backend.snapshot_error = StorageUnavailable("the store is away for a moment")
    async with running(gated_db) as runtime:  # the reminder loop's first poll fails, and it carries on
        backend.snapshot_error = None
        assert await runtime.ref(counter_id()).request(Add(1)) == 1
        assert await runtime.reminders.poll_once() == 0
