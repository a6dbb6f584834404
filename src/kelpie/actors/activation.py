"""One activation of one actor: its mailbox, its turns, and its fenced commits.

A turn runs the handler, then commits the state (if its encoding changed), the turn's key-value
writes and reminder changes in one transaction that also checks the fencing epoch; the reply is
released only after that commit returns (the output gate). A failed turn restores the state from
the last committed encoding and drops the buffered writes. A commit whose outcome is uncertain
(conflict, unknown result, fenced) retires the activation: the next message activates afresh from
the store, so memory never diverges from what is durable.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import hashlib
import math
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kelpie import limits
from kelpie.actors.actor import Actor, Handler, ReminderFired
from kelpie.actors.codec import decode_state, encode, encode_state
from kelpie.actors.context import ActorContext, ActorKV, reminder_name
from kelpie.actors.directory import actor_subspace
from kelpie.actors.ids import ActorId
from kelpie.actors.reminders import reminder_due_key
from kelpie.errors import (
    HandlerFailed,
    InvalidArgument,
    KelpieError,
    NotEncodable,
    RequestTimedOut,
    TurnTimedOut,
    shorten,
)
from kelpie.storage import Transaction, pack, transactional, unpack

if TYPE_CHECKING:
    from kelpie.actors.runtime import ActorRuntime

__all__ = ["Activation", "ActivationStatus", "Envelope", "apply_reminder_change", "read_state", "write_state"]


class ActivationStatus(enum.Enum):
    ACTIVE = "active"
    DEACTIVATING = "deactivating"
    RETIRED = "retired"


@dataclass(slots=True)
class Envelope:
    """A queued message; ``reply`` is ``None`` for a tell."""

    message: object
    reply: asyncio.Future[Any] | None


@dataclass(frozen=True, slots=True)
class _ReminderChange:
    due_wall_s: float | None  # None cancels
    period_s: float | None
    fired_due_wall_s: float | None = None  # set when this change advances a fired reminder


class Activation:
    """See the module docstring. Created and driven by :class:`~kelpie.actors.runtime.ActorRuntime`."""

    def __init__(
        self,
        runtime: ActorRuntime,
        actor_id: ActorId,
        actor: Actor,
        *,
        epoch: int,
        state: Any,
        committed_state: bytes | None,
    ) -> None:
        self.runtime = runtime
        self.actor_id = actor_id
        self.actor = actor
        self.epoch = epoch
        self.state = state
        self._state_type = type(actor).state_type
        # A digest of the state's encoding as last committed (or as initial, if never committed):
        # a turn whose state encodes to the same digest writes nothing. A digest, not the bytes,
        # because idle activations are many and memory per activation is what limits them.
        self._committed_digest = _digest(
            committed_state if committed_state is not None else encode_state(state, self._state_type)
        )
        self._has_committed = committed_state is not None
        self._kv: ActorKV | None = None
        self._reminder_changes: dict[str, _ReminderChange] = {}
        self.context = ActorContext(self)
        # Created on first use: most activations never queue, and an empty deque costs 760 bytes.
        self.mailbox: collections.deque[Envelope] | None = None
        self.busy = False
        self.status = ActivationStatus.ACTIVE
        self.last_active_s = runtime.env.clock.monotonic_s()
        self.idle_noticed = False
        self.retired: asyncio.Event | None = None  # set once retired, for callers waiting on it
        # Deactivation waits here for running and queued turns to finish.
        self.quiet_waiters: collections.deque[asyncio.Future[None]] | None = None

    @property
    def kv(self) -> ActorKV:
        if self._kv is None:
            self._kv = ActorKV(self.runtime.db, actor_subspace("kv", self.actor_id))
        return self._kv

    def retired_event(self) -> asyncio.Event:
        if self.retired is None:
            self.retired = asyncio.Event()
            if self.status is ActivationStatus.RETIRED:
                self.retired.set()
        return self.retired

    # --- turns -------------------------------------------------------------------------------------

    async def run_turn(
        self, message: object, timeout_s: float | None = None, handler: Handler | None = None
    ) -> Any:
        """Run one turn for ``message`` and commit it; the caller must hold ``busy``.

        Raises:
            NoHandler: nothing handles ``message`` (checked before the turn starts).
            HandlerFailed, TurnTimedOut, RequestTimedOut, NotEncodable: rolled back; still usable.
            Fenced, Conflict, CommitUnknownResult...: the commit failed; this activation retires.
        """
        assert self.busy
        if handler is None:
            handler = self.actor.handler_for(message)
        if isinstance(message, ReminderFired):
            self._reminder_fired(message)
        turn_limit_s = self.runtime.turn_timeout_s
        limit_s = turn_limit_s if timeout_s is None else min(timeout_s, turn_limit_s)
        self.runtime.statistics_counters["turns"] += 1
        deadline: asyncio.Timeout | None = None
        try:
            # Run the handler's first step directly: a handler that finishes without suspending
            # (the common, hot case) needs no timer. One that suspends goes on under a deadline.
            coroutine = handler(self.actor, self.context, message)
            try:
                step = coroutine.send(None)
            except StopIteration as finished:
                reply = finished.value
            else:
                deadline = asyncio.timeout(limit_s)
                async with deadline:
                    reply = await _Resumed(coroutine, step)
            if not _plainly_encodable(reply):
                encode(reply, what=f"reply of {type(self.actor).__name__} to {type(message).__name__}")
        except TimeoutError as error:
            await self.rollback()
            self.runtime.statistics_counters["turns_failed"] += 1
            if deadline is None or not deadline.expired():  # the handler's own TimeoutError
                raise HandlerFailed(
                    f"actor {self.actor_id} handler for {type(message).__name__} raised "
                    f"TimeoutError: {error}; the turn was rolled back"
                ) from error
            if timeout_s is not None and timeout_s < turn_limit_s:
                raise RequestTimedOut(
                    f"actor {self.actor_id} did not reply to {type(message).__name__} within "
                    f"{timeout_s} s; the turn was rolled back"
                ) from None
            raise TurnTimedOut(
                f"actor {self.actor_id} turn for {type(message).__name__} ran past {turn_limit_s} s; "
                "rolled back"
            ) from None
        except KelpieError:
            await self.rollback()
            self.runtime.statistics_counters["turns_failed"] += 1
            raise
        except Exception as error:
            await self.rollback()
            self.runtime.statistics_counters["turns_failed"] += 1
            raise HandlerFailed(
                f"actor {self.actor_id} handler for {type(message).__name__} raised "
                f"{type(error).__name__}: {error}; the turn was rolled back"
            ) from error
        except BaseException:  # cancelled mid-turn: nothing of it is kept
            await self.rollback()
            raise
        await self.commit()
        self.last_active_s = self.runtime.env.clock.monotonic_s()
        self.idle_noticed = False
        return reply

    async def run_hook(self, hook_name: str) -> None:
        """Run a lifecycle hook (``on_activate``...) as a turn; the caller must hold ``busy``.

        A hook the actor class does not override is skipped: the base hooks do nothing.
        """
        if getattr(type(self.actor), hook_name) is getattr(Actor, hook_name):
            return
        hook = getattr(self.actor, hook_name)
        try:
            async with asyncio.timeout(self.runtime.turn_timeout_s):
                await hook(self.context)
        except BaseException:
            await self.rollback()
            raise
        await self.commit()

    async def rollback(self) -> None:
        """Put back the state as last committed, re-read from the store, and drop buffered writes.

        The store holds exactly this activation's last commit: fencing lets no one else write it.
        (If another node has already taken the actor over, this may load that node's state; that is
        harmless, because this activation's next commit is fenced.) If the state cannot be read,
        the activation retires and the next message activates afresh.
        """
        if self._kv is not None:
            self._kv.pending.clear()
        self._reminder_changes.clear()
        if not self._has_committed:
            self.state = self.actor.initial_state()
            return
        try:
            async with self.runtime.db.transaction() as tr:
                state_bytes = await read_state(tr, self.actor_id, snapshot=True)
            assert state_bytes is not None, self.actor_id
            self.state = decode_state(state_bytes, self._state_type)
        except KelpieError as error:
            self.runtime.note_commit_failure(self, error)

    # --- commit ------------------------------------------------------------------------------------

    async def commit(self) -> None:
        """Commit the turn's writes so far, fenced. No writes, no commit.

        Raises:
            NotEncodable, InvalidArgument: the state cannot be stored (rolled back, still usable).
            Fenced and storage errors: the activation retires (its memory may not match the store).
        """
        try:
            state_bytes = encode_state(self.state, self._state_type)
        except NotEncodable:
            await self.rollback()
            raise
        state_digest = _digest(state_bytes)
        state_changed = state_digest != self._committed_digest
        kv_pending = self._kv.pending if self._kv is not None else {}
        if not state_changed and not kv_pending and not self._reminder_changes:
            return
        if len(state_bytes) > limits.ACTOR_STATE_BYTES_LIMIT:
            await self.rollback()
            raise InvalidArgument(
                f"actor {self.actor_id} state of {len(state_bytes)} bytes exceeds the limit of "
                f"{limits.ACTOR_STATE_BYTES_LIMIT} bytes; keep large data in ctx.kv; rolled back"
            )
        kv_writes = dict(kv_pending)
        reminder_changes = dict(self._reminder_changes)
        write_bytes = len(state_bytes) + sum(len(key) + len(value or b"") for key, value in kv_writes.items())
        if write_bytes > limits.ACTOR_TURN_WRITES_BYTES_LIMIT:
            await self.rollback()
            raise InvalidArgument(
                f"actor {self.actor_id} turn writes {write_bytes} bytes, over the limit of "
                f"{limits.ACTOR_TURN_WRITES_BYTES_LIMIT}; rolled back"
            )
        runtime = self.runtime
        actor_id, epoch = self.actor_id, self.epoch
        now_wall_s = runtime.env.clock.wall_s()

        async def body(tr: Transaction) -> None:
            await runtime.directory.check_fence(tr, actor_id, epoch)
            if state_changed:
                write_state(tr, actor_id, state_bytes)
            for key, value in kv_writes.items():
                if value is None:
                    tr.clear(key)
                else:
                    tr.set(key, value)
            for name, change in reminder_changes.items():
                await apply_reminder_change(tr, actor_id, name, change, now_wall_s)

        try:
            await runtime.buggify("actor commit")
            await transactional(runtime.db, body)
        except BaseException as error:
            runtime.note_commit_failure(self, error)
            raise
        runtime.statistics_counters["commits"] += 1
        self._committed_digest = state_digest
        self._has_committed = self._has_committed or state_changed
        if self._kv is not None:
            self._kv.pending.clear()
        self._reminder_changes.clear()

    # --- reminders ---------------------------------------------------------------------------------

    def set_reminder(self, name: str, delay_s: float, period_s: float | None) -> None:
        reminder_name(name)
        if not isinstance(delay_s, int | float) or isinstance(delay_s, bool) or not 0 <= delay_s < 10**9:
            raise InvalidArgument(f"reminder delay_s must be a number in [0, 1e9), got {shorten(delay_s)}")
        if period_s is not None and (
            not isinstance(period_s, int | float)
            or isinstance(period_s, bool)
            or not limits.ACTOR_REMINDER_PERIOD_S_MIN <= period_s < 10**9
            or math.isnan(period_s)
        ):
            raise InvalidArgument(
                f"reminder period_s must be None or a number >= {limits.ACTOR_REMINDER_PERIOD_S_MIN}, "
                f"got {shorten(period_s)}"
            )
        self.actor.handler_for(ReminderFired(name, 0.0))  # NoHandler now, not when it fires
        if len(self._reminder_changes) >= limits.ACTOR_REMINDERS_PER_ACTOR_LIMIT:
            raise InvalidArgument(
                f"at most {limits.ACTOR_REMINDERS_PER_ACTOR_LIMIT} reminder changes per turn"
            )
        due_wall_s = self.runtime.env.clock.wall_s() + float(delay_s)
        self._reminder_changes[name] = _ReminderChange(
            due_wall_s, None if period_s is None else float(period_s)
        )

    def cancel_reminder(self, name: str) -> None:
        reminder_name(name)
        self._reminder_changes[name] = _ReminderChange(None, None)

    def _reminder_fired(self, message: ReminderFired) -> None:
        if message.name not in self._reminder_changes:
            self._reminder_changes[message.name] = _ReminderChange(
                None, None, fired_due_wall_s=message.due_wall_s
            )


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


_INT64_MIN = -(2**63)
_UINT64_LIMIT = 2**64


def _plainly_encodable(value: object) -> bool:
    """True for replies msgpack surely encodes, so the hot path can skip a trial encoding."""
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is bytes or kind is float:
        return True
    return kind is int and _INT64_MIN <= value < _UINT64_LIMIT  # type: ignore[operator]


class _Resumed:
    """Awaitable that carries on a coroutine already advanced by one ``send(None)``.

    The task awaiting it sees exactly what it would have seen awaiting the coroutine from the
    start: the same yielded futures, results and exceptions (cancellation included).
    """

    __slots__ = ("_coroutine", "_step")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], step: Any) -> None:
        self._coroutine = coroutine
        self._step = step

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, step = self._coroutine, self._step
        while True:
            try:
                sent = yield step
            except BaseException as error:  # thrown in by the task: hand it to the coroutine
                try:
                    step = coroutine.throw(error)
                except StopIteration as finished:
                    return finished.value
            else:
                try:
                    step = coroutine.send(sent)
                except StopIteration as finished:
                    return finished.value


def write_state(tr: Transaction, actor_id: ActorId, state_bytes: bytes) -> None:
    """Store the state encoding in value-sized chunks under the actor's state subspace."""
    subspace = actor_subspace("state", actor_id)
    begin, end = subspace.range()
    tr.clear_range(begin, end)
    chunk_bytes = limits.VALUE_BYTES_LIMIT
    for index, offset in enumerate(range(0, max(len(state_bytes), 1), chunk_bytes)):
        tr.set(subspace.pack((index,)), state_bytes[offset : offset + chunk_bytes])


async def read_state(tr: Transaction, actor_id: ActorId, *, snapshot: bool = False) -> bytes | None:
    """The committed state encoding of ``actor_id``, or ``None`` if it never committed."""
    begin, end = actor_subspace("state", actor_id).range()
    rows = await tr.get_range(begin, end, snapshot=snapshot)
    if not rows:
        return None
    return b"".join(value for _, value in rows)


async def apply_reminder_change(
    tr: Transaction, actor_id: ActorId, name: str, change: _ReminderChange, now_wall_s: float
) -> None:
    """Within ``tr``: set, cancel or advance reminder ``name`` and keep the due index in step."""
    actor_key = actor_subspace("reminders", actor_id).pack((name,))
    raw = await tr.get(actor_key)
    current_due: float | None = None
    current_period: float | None = None
    if raw is not None:
        due_item, period_item = unpack(raw)
        assert isinstance(due_item, float), raw
        assert period_item is None or isinstance(period_item, float), raw
        current_due, current_period = due_item, period_item
    new_due, new_period = change.due_wall_s, change.period_s
    if change.fired_due_wall_s is not None:
        if current_due is None or current_due != change.fired_due_wall_s:
            return  # changed since it fired: leave the newer schedule alone
        if current_period is None:
            new_due, new_period = None, None
        else:
            skipped = max(1, math.ceil((now_wall_s - current_due) / current_period))
            new_due, new_period = current_due + skipped * current_period, current_period
    if current_due is not None:
        tr.clear(reminder_due_key(current_due, actor_id, name))
    if new_due is None:
        tr.clear(actor_key)
        return
    tr.set(actor_key, pack((new_due, new_period)))
    tr.set(reminder_due_key(new_due, actor_id, name), b"")
