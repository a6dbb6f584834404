"""Commits: nothing written, nothing committed; the output gate; checkpoints; failed commits; and
fencing between two runtimes (nodes) sharing one store."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from actor_kit import (
    JOURNAL,
    Add,
    CheckpointThenFail,
    Get,
    Hold,
    ParkingClock,
    Put,
    Read,
    Whoami,
    clock_of,
    counter_id,
    gated,
    memory_only,
    running,
    until,
)

from kelpie import limits
from kelpie.actors.directory import NodeDirectory
from kelpie.env import Env
from kelpie.errors import (
    ActorActiveElsewhere,
    CommitFailed,
    Fenced,
    HandlerFailed,
    RetryLimitExceeded,
)
from kelpie.storage import CommitFault, Database, MemoryBackend, MemoryFaults, open_database

OpenTwin = Callable[..., Awaitable[Database]]


def memory_faults(db: Database) -> MemoryFaults:
    backend = db.backend
    assert isinstance(backend, MemoryBackend)
    return backend.store.faults


# --- what a turn commits ------------------------------------------------------------------------------


async def test_a_turn_that_writes_nothing_commits_nothing(db: Database) -> None:
    gated_db, backend = gated(db)
    async with running(gated_db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        statistics, backend_commits = runtime.statistics(), backend.commits
        assert await ref.request(Get()) == 1
        assert await ref.request(Add(0)) == 1  # state re-encodes to the same bytes
        assert await ref.request(Read(b"absent")) is None
        await ref.request(Whoami())
        after = runtime.statistics()
        assert after.turns == statistics.turns + 4
        assert (after.commits, backend.commits) == (statistics.commits, backend_commits)
        await ref.request(Put(b"k", b"v"))
        assert (runtime.statistics().commits, backend.commits) == (
            statistics.commits + 1,
            backend_commits + 1,
        )


async def test_the_reply_is_released_only_after_the_commit_is_durable(db: Database) -> None:
    gated_db, backend = gated(db)
    async with running(gated_db) as runtime:
        ref = runtime.ref(counter_id())
        assert await ref.request(Add(1)) == 1
        backend.hold()
        pending = asyncio.create_task(ref.request(Add(2)))
        await backend.commit_waiting.wait()
        assert not pending.done()  # the turn ran; its reply waits for the commit
        assert (await runtime.read_state(counter_id()))["total"] == 1
        backend.release()
        assert await pending == 3
        assert (await runtime.read_state(counter_id()))["total"] == 3


@memory_only
async def test_a_failed_commit_reaches_the_caller_and_the_actor_restarts_from_the_store(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        memory_faults(db).inject(CommitFault.FAIL_BEFORE_DURABLE, limits.TRANSACTION_ATTEMPTS_LIMIT)
        with pytest.raises(RetryLimitExceeded) as info:
            await ref.request(Add(2))
        assert isinstance(info.value.last_error, CommitFailed)
        assert (await runtime.read_state(counter_id()))["total"] == 1
        assert not runtime.is_active(counter_id())  # memory may differ from the store: retired
        assert runtime.statistics().retired == 1
        assert await ref.request(Get()) == 1  # a fresh activation, from the committed state
        assert JOURNAL.count("activate") == 2


@memory_only
async def test_messages_queued_behind_a_failed_commit_are_refused_not_lost_in_silence(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        release = asyncio.Event()
        hold = Hold(1, release)
        held = asyncio.create_task(ref.request(hold))
        await hold.entered.wait()
        queued = asyncio.create_task(ref.request(Add(10)))
        await until(lambda: runtime.statistics().queued_messages == 1)
        memory_faults(db).inject(CommitFault.FAIL_BEFORE_DURABLE, limits.TRANSACTION_ATTEMPTS_LIMIT)
        release.set()
        with pytest.raises(RetryLimitExceeded):
            await held
        with pytest.raises(Fenced, match="retired before this message ran; resend it"):
            await queued
        assert JOURNAL.count("add") == 0
        assert await ref.request(Get()) == 0


@memory_only
async def test_a_commit_whose_outcome_was_lost_is_retried_and_applied_once(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        memory_faults(db).inject(CommitFault.FAIL_AFTER_DURABLE)
        assert await ref.request(Add(2)) == 3
        assert (await runtime.read_state(counter_id()))["total"] == 3
        assert await ref.request(Add(1)) == 4


async def test_a_checkpoint_commits_mid_turn_and_a_later_failure_rolls_back_to_it(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        commits = runtime.statistics().commits
        with pytest.raises(HandlerFailed, match="fails after the checkpoint"):
            await ref.request(CheckpointThenFail(10, 100))
        assert runtime.statistics().commits == commits + 1
        assert await ref.request(Get()) == 11
        assert await ref.request(Read(b"before")) == b"1"
        assert await ref.request(Read(b"after")) is None
        assert (await runtime.read_state(counter_id()))["total"] == 11


async def test_concurrent_turns_of_many_actors_all_commit(db: Database) -> None:
    async with running(db) as runtime:
        ids = [counter_id(f"c-{number}") for number in range(20)]
        await asyncio.gather(*(runtime.ref(actor_id).request(Add(1)) for actor_id in ids for _ in range(3)))
        for actor_id in ids:
            assert (await runtime.read_state(actor_id))["total"] == 3


# --- fencing across nodes -------------------------------------------------------------------------------


async def test_a_second_node_takes_over_only_after_the_owners_heartbeat_stops(
    db: Database, open_twin: OpenTwin
) -> None:
    clock = clock_of(db)
    twin = await open_twin()
    async with running(db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        ref_a, ref_b = a.ref(counter_id()), b.ref(counter_id())
        assert await ref_a.request(Add(1)) == 1
        with pytest.raises(ActorActiveElsewhere, match="active on live node node-a") as info:
            await ref_b.request(Add(10))
        assert info.value.node_id == "node-a"
        assert info.value.retryable
        assert not b.is_active(counter_id())
        # While the owner's heartbeat keeps changing, it is alive however much time passes.
        for _ in range(3):
            clock.advance(20)
            await a.directory.beat()
            with pytest.raises(ActorActiveElsewhere):
                await ref_b.request(Add(10))
        # Its heartbeat stops: alive until failure_timeout_s of the observer's clock has passed.
        clock.advance(29.5)
        with pytest.raises(ActorActiveElsewhere):
            await ref_b.request(Add(10))
        clock.advance(0.5)
        assert await ref_b.request(Add(10)) == 11  # taken over, with the committed state
        entry = await b.directory.entry(counter_id())
        assert (entry.node_id, entry.epoch) == ("node-b", 2)
        # The old owner cannot commit any more: Fenced, and its activation retires.
        with pytest.raises(Fenced, match="epoch 1 on node node-a is fenced"):
            await ref_a.request(Add(100))
        statistics = a.statistics()
        assert (statistics.fenced, statistics.retired, statistics.activations) == (1, 1, 0)
        assert not a.is_active(counter_id())
        with pytest.raises(ActorActiveElsewhere, match="node-b"):
            await ref_a.request(Add(100))
        assert await ref_b.request(Add(1)) == 12
        assert (await b.read_state(counter_id()))["total"] == 12


async def test_liveness_is_judged_by_the_observers_own_clock_only(db: Database, open_twin: OpenTwin) -> None:
    owner_clock = clock_of(db)
    observer_clock = ParkingClock()
    observer_clock.advance(5_000_000)  # the nodes' clocks disagree wildly; it must not matter
    twin = await open_twin(Env(clock=observer_clock, rng=random.Random(99)))
    async with running(db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        await a.ref(counter_id()).request(Add(1))
        with pytest.raises(ActorActiveElsewhere):
            await b.ref(counter_id()).request(Add(10))
        owner_clock.advance(10_000)  # the owner's time passing says nothing about its liveness
        with pytest.raises(ActorActiveElsewhere):
            await b.ref(counter_id()).request(Add(10))
        observer_clock.advance(30)
        assert await b.ref(counter_id()).request(Add(10)) == 11


async def test_a_commit_in_flight_during_a_takeover_is_fenced(db: Database, open_twin: OpenTwin) -> None:
    clock = clock_of(db)
    gated_db, backend = gated(db)
    twin = await open_twin()
    async with running(gated_db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        await a.ref(counter_id()).request(Add(1))
        with pytest.raises(ActorActiveElsewhere):
            await b.ref(counter_id()).request(Add(10))
        clock.advance(30)  # node-a's heartbeat has stopped, as far as node-b can tell
        backend.hold()
        in_flight = asyncio.create_task(a.ref(counter_id()).request(Add(100)))
        await backend.commit_waiting.wait()  # node-a checked its fence and is committing...
        assert await b.ref(counter_id()).request(Add(10)) == 11  # ...when node-b takes over
        backend.release()
        with pytest.raises(Fenced):
            await in_flight
        assert a.statistics().fenced == 1
        assert (await b.read_state(counter_id()))["total"] == 11


@memory_only
async def test_messages_queued_at_a_fenced_activation_are_refused(db: Database, open_twin: OpenTwin) -> None:
    clock = clock_of(db)
    twin = await open_twin()
    async with running(db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        ref_a = a.ref(counter_id())
        await ref_a.request(Add(1))
        with pytest.raises(ActorActiveElsewhere):
            await b.ref(counter_id()).request(Add(10))
        release = asyncio.Event()
        hold = Hold(5, release)
        held = asyncio.create_task(ref_a.request(hold))
        await hold.entered.wait()
        queued = asyncio.create_task(ref_a.request(Add(100)))
        await until(lambda: a.statistics().queued_messages == 1)
        clock.advance(30)
        assert await b.ref(counter_id()).request(Add(10)) == 11
        release.set()
        with pytest.raises(Fenced):
            await held
        with pytest.raises(Fenced, match="resend it"):
            await queued
        assert (await b.read_state(counter_id()))["total"] == 11


async def test_a_clean_shutdown_hands_its_actors_over_at_once(db: Database, open_twin: OpenTwin) -> None:
    twin = await open_twin()
    async with running(db, node_id="node-a") as a:
        await a.ref(counter_id()).request(Add(1))
    async with running(twin, node_id="node-b") as b:
        assert (await b.directory.entry(counter_id())).node_id is None
        assert await b.ref(counter_id()).request(Add(10)) == 11  # no failure timeout to wait out
        assert (await b.directory.entry(counter_id())).node_id == "node-b"


async def test_a_vanished_node_record_frees_its_actors(db: Database, open_twin: OpenTwin) -> None:
    twin = await open_twin()
    async with running(db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        await a.ref(counter_id()).request(Add(1))
        with pytest.raises(ActorActiveElsewhere):
            await b.ref(counter_id()).request(Add(10))
        await a.directory.unregister()  # as a clean shutdown does, before its actors are released
        assert await b.ref(counter_id()).request(Add(10)) == 11
        with pytest.raises(Fenced):
            await a.ref(counter_id()).request(Add(100))


async def test_a_heartbeat_after_unregistering_does_not_bring_the_node_back(
    db: Database, open_twin: OpenTwin
) -> None:
    twin = await open_twin()
    async with running(db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        await a.ref(counter_id()).request(Add(1))
        await a.directory.unregister()
        await a.directory.beat()  # a beat that lost the race with a clean shutdown
        assert await b.ref(counter_id()).request(Add(10)) == 11  # node-a stays gone


async def test_a_heartbeat_in_flight_during_unregistering_does_not_bring_the_node_back(
    db: Database, open_twin: OpenTwin
) -> None:
    gated_db, backend = gated(db)
    twin = await open_twin()
    async with running(gated_db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        await a.ref(counter_id()).request(Add(1))
        backend.hold()
        beating = asyncio.create_task(a.directory.beat())
        await backend.commit_waiting.wait()
        # node-a's record is removed (as its shutdown does) while its last beat is committing.
        await NodeDirectory(twin, twin.env, node_id="node-a", failure_timeout_s=30).unregister()
        backend.release()
        await beating
        assert await b.ref(counter_id()).request(Add(10)) == 11


async def test_a_release_that_fails_at_deactivation_is_retried_so_others_can_take_over(
    manual_env: Env,
) -> None:
    db = await open_database("memory://", env=manual_env)  # the memory backend's fault hooks
    assert isinstance(db.backend, MemoryBackend)
    twin = Database(MemoryBackend(db.backend.store), db.env, url=db.url)
    async with running(db, node_id="node-a") as a, running(twin, node_id="node-b") as b:
        assert await a.ref(counter_id()).request(Add(1)) == 1
        clock_of(db).advance(a.idle_timeout_s + 1)
        # Every commit fails for a while: on_deactivate's and the directory release's.
        db.backend.store.faults.inject(
            CommitFault.FAIL_BEFORE_DURABLE, count=2 * limits.TRANSACTION_ATTEMPTS_LIMIT
        )
        assert await a.sweep_idle() == 1  # deactivated, but the directory release failed
        assert not db.backend.store.faults.queued
        assert not a.is_active(counter_id())
        with pytest.raises(ActorActiveElsewhere, match="node-a"):
            await b.ref(counter_id()).request(Add(1))
        await a.retry_releases()
        assert await b.ref(counter_id()).request(Add(1)) == 2
    await db.close()
