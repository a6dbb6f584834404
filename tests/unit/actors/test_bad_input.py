"""Bad input: typed errors that name the offending value, and nothing committed or activated."""

from __future__ import annotations

import pytest
from actor_kit import (
    JOURNAL,
    Add,
    Counter,
    Get,
    Put,
    Read,
    ReplyObject,
    SetReminder,
    SetState,
    SetTimer,
    StoreObject,
    Tally,
    counter_id,
    make_runtime,
    memory_only,
    running,
)

from kelpie import limits
from kelpie.actors import Actor, ActorContext, ActorId, ActorRuntime, handler
from kelpie.errors import (
    InvalidActorId,
    InvalidArgument,
    InvalidKey,
    KeyTooLarge,
    NoHandler,
    NotEncodable,
    UnknownActorType,
)
from kelpie.storage import Database

# --- unknown types and malformed ids ------------------------------------------------------------------


@memory_only
async def test_an_unknown_actor_type_is_refused_naming_it(db: Database) -> None:
    unknown = ActorId.of("test", "nonesuch", "k")
    async with running(db) as runtime:
        with pytest.raises(
            UnknownActorType, match=r"unknown actor type 'nonesuch' in test/nonesuch/k"
        ) as info:
            runtime.ref(unknown)
        assert "counter" in str(info.value)  # what is registered
        with pytest.raises(UnknownActorType):
            await runtime.request(unknown, Add(1))
        with pytest.raises(UnknownActorType):
            await runtime.send(unknown, Add(1))
        with pytest.raises(UnknownActorType):
            await runtime.read_state(unknown)
        entry = await runtime.directory.entry(unknown)
        assert (entry.node_id, entry.epoch) == (None, 0)  # nothing claimed
        assert runtime.statistics().activations_total == 0


@memory_only
@pytest.mark.parametrize(
    "bad_id",
    [
        "test/counter/c-1",  # a string, not an ActorId
        ("test", "counter", "c-1"),
        ActorId("", "counter", "c-1"),  # the unchecked constructor lets these through
        ActorId("te/st", "counter", "c-1"),
        ActorId("test", "counter", ""),
        ActorId("test", "counter", 7),  # type: ignore[arg-type]
        ActorId("test", "counter", "k" * 600),
    ],
)
async def test_a_malformed_actor_id_is_refused_before_anything_runs(db: Database, bad_id: object) -> None:
    async with running(db) as runtime:
        with pytest.raises(InvalidActorId):
            runtime.ref(bad_id)  # type: ignore[arg-type]
        with pytest.raises(InvalidActorId):
            await runtime.request(bad_id, Add(1))  # type: ignore[arg-type]
        with pytest.raises(InvalidActorId):
            await runtime.send(bad_id, Add(1))  # type: ignore[arg-type]
        with pytest.raises(InvalidActorId):
            await runtime.read_state(bad_id)  # type: ignore[arg-type]
        assert JOURNAL.events == []
        assert runtime.statistics().activations_total == 0


# --- messages no handler accepts ------------------------------------------------------------------------


@memory_only
async def test_a_message_without_a_handler_activates_nothing(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        with pytest.raises(NoHandler, match=r"no handler for str 'hello'; it handles \[.*'Add'") as info:
            await ref.request("hello")
        assert "'counter'" in str(info.value)
        with pytest.raises(NoHandler, match="no handler for int 42"):
            await ref.send(42)
        assert not runtime.is_active(counter_id())
        assert JOURNAL.events == []
        assert runtime.statistics().activations_total == 0
        assert (await runtime.directory.entry(counter_id())).epoch == 0


@memory_only
async def test_a_message_without_a_handler_to_an_active_actor_runs_no_turn(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        turns = runtime.statistics().turns
        with pytest.raises(NoHandler):
            await ref.request(object())
        with pytest.raises(NoHandler):
            await ref.send(b"bytes")
        assert runtime.statistics().turns == turns
        assert runtime.statistics().queued_messages == 0
        assert await ref.request(Get()) == 1


# --- replies and state that cannot be encoded ------------------------------------------------------------


async def test_a_reply_that_cannot_be_encoded_is_refused_and_nothing_commits(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        commits = runtime.statistics().commits
        with pytest.raises(
            NotEncodable, match=r"reply of Counter to ReplyObject cannot be encoded.*<object object"
        ):
            await ref.request(ReplyObject(100))
        assert runtime.statistics().commits == commits
        assert await ref.request(Get()) == 1
        assert await ref.request(Read(b"reply")) is None
        assert (await runtime.read_state(counter_id()))["total"] == 1


async def test_state_that_cannot_be_encoded_is_refused_and_nothing_commits(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        commits = runtime.statistics().commits
        with pytest.raises(NotEncodable, match=r"actor state cannot be encoded.*<object object"):
            await ref.request(StoreObject(100))
        assert runtime.statistics().commits == commits
        assert await ref.request(Get()) == 1  # rolled back in memory too
        assert await ref.request(Read(b"state")) is None
        state = await runtime.read_state(counter_id())
        assert state["total"] == 1
        assert "bad" not in state
        assert await ref.request(Add(1)) == 2  # still usable


@memory_only
async def test_dataclass_state_replaced_by_another_type_is_refused(db: Database) -> None:
    tally_id = ActorId.of("test", "tallier", "t-1")
    async with running(db) as runtime:
        ref = runtime.ref(tally_id)
        with pytest.raises(NotEncodable, match="actor state must be a Tally, got str 'oops'"):
            await ref.request(SetState("oops"))
        await ref.request(SetState(Tally(5, ["x"])))
        assert await runtime.read_state(tally_id) == Tally(5, ["x"])


@memory_only
async def test_a_bad_kv_key_from_a_handler_reaches_the_caller(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        with pytest.raises(InvalidKey, match="key must be bytes, got str 'text'"):
            await ref.request(Put("text", b"v"))  # type: ignore[arg-type]
        assert runtime.is_active(counter_id())


# --- timers and reminders ------------------------------------------------------------------------------


@memory_only
@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (SetReminder("r", -1), "delay_s must be a number in"),
        (SetReminder("r", "soon"), "delay_s must be a number in"),  # type: ignore[arg-type]
        (SetReminder("r", 1, period_s=0.5), "period_s must be None or a number >= 1.0"),
        (SetReminder("r", 1, period_s=float("nan")), "period_s must be None or a number"),
        (SetReminder("", 1), "name must be a non-empty string"),
        (SetTimer("t", -1), "timer delay_s must be a number in"),
        (SetTimer("t", 1, period_s=0), "timer period_s must be a number in"),
        (SetTimer("", 1), "name must be a non-empty string"),
    ],
)
async def test_bad_timer_and_reminder_settings_are_refused(db: Database, message: object, shown: str) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        commits = runtime.statistics().commits
        with pytest.raises(InvalidArgument, match=shown):
            await ref.request(message)
        assert runtime.statistics().commits == commits + 1  # on_activate's commit only
        assert runtime.timers.fire_due() is None


@memory_only
async def test_a_reminder_for_an_actor_that_cannot_handle_it_is_refused_when_set(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(ActorId.of("test", "plain", "p-1"))
        with pytest.raises(NoHandler, match="ReminderFired"):
            await ref.request(SetReminder("r", 1))
        assert await runtime.reminders.due() == []


# --- registration and options -----------------------------------------------------------------------------


def test_a_handler_must_name_its_message_class() -> None:
    with pytest.raises(InvalidArgument, match=r"handler Sloppy.greet needs a 'message' parameter"):

        class Sloppy(Actor):
            type_name = "sloppy"

            @handler
            async def greet(self, ctx: ActorContext, text) -> None:  # type: ignore[no-untyped-def]
                return None


@memory_only
def test_only_actor_classes_with_a_unique_type_name_register(db: Database) -> None:
    with pytest.raises(InvalidArgument, match="must be Actor subclasses, got <class 'int'>"):
        ActorRuntime(db, actor_types=[int])  # type: ignore[list-item]

    class Nameless(Actor):
        pass

    with pytest.raises(InvalidArgument, match=r"Nameless\.type_name must be a non-empty string"):
        ActorRuntime(db, actor_types=[Nameless])

    class Impostor(Actor):
        type_name = Counter.type_name

    with pytest.raises(InvalidArgument, match="'counter' is already registered to Counter"):
        ActorRuntime(db, actor_types=[Counter, Impostor])
    ActorRuntime(db, actor_types=[Counter, Counter])  # the same class twice is harmless


@memory_only
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("turn_timeout_s", 0),
        ("idle_timeout_s", -5),
        ("idle_notice_s", "soon"),
        ("idle_notice_s", 0),
        ("heartbeat_interval_s", "1"),
        ("failure_timeout_s", True),
        ("reminder_poll_interval_s", 10**8),
        ("mailbox_limit", 0),
        ("mailbox_limit", 1.5),
        ("mailbox_limit", 10**9),
    ],
)
def test_bad_runtime_options_are_refused_naming_them(db: Database, option: str, value: object) -> None:
    with pytest.raises(InvalidArgument, match=f"{option} must be .*got {value!r}"):
        make_runtime(db, **{option: value})


@memory_only
async def test_a_kv_key_too_large_once_scoped_to_the_actor_is_refused_in_the_turn(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(counter_id())
        await ref.request(Add(1))
        key = b"k" * limits.KEY_BYTES_LIMIT  # within the limit alone, over it under the actor's prefix
        with pytest.raises(KeyTooLarge):
            await ref.request(Put(key, b"v"))
        assert runtime.is_active(counter_id())  # refused in the turn, not by a failed commit
        assert runtime.statistics().retired == 0
        assert await ref.request(Get()) == 1


@memory_only
async def test_a_timer_for_an_actor_that_cannot_handle_it_is_refused_when_set(db: Database) -> None:
    async with running(db) as runtime:
        ref = runtime.ref(ActorId.of("test", "plain", "p-1"))
        with pytest.raises(NoHandler, match="TimerFired"):
            await ref.request(SetTimer("t", 1))
        assert runtime.timers.fire_due() is None
