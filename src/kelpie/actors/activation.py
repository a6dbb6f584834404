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
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kelpie import limits
from kelpie.actors.actor import Actor, ReminderFired
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
        # The encoding of the state as last committed (or as initial, if never committed): a turn
        # whose state encodes to the same bytes writes nothing.
        self._committed_state = (
            committed_state if committed_state is not None else encode_state(state, self._state_type)
        )
        self.kv = ActorKV(runtime.db, actor_subspace("kv", actor_id))
        self._reminder_changes: dict[str, _ReminderChange] = {}
        self.context = ActorContext(self)
        self.mailbox: collections.deque[Envelope] = collections.deque()
        self.busy = False
        self.status = ActivationStatus.ACTIVE
        self.last_active_s = runtime.env.clock.monotonic_s()
        self.idle_noticed = False
        self.retired = asyncio.Event()
        # Deactivation waits here for running and queued turns to finish.
        self.quiet_waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    # --- turns -------------------------------------------------------------------------------------

    async def run_turn(self, message: object, timeout_s: float | None = None) -> Any:
        """Run one turn for ``message`` and commit it; the caller must hold ``busy``.

        Raises:
            NoHandler: nothing handles ``message`` (checked before the turn starts).
            HandlerFailed, TurnTimedOut, RequestTimedOut, NotEncodable: rolled back; still usable.
            Fenced, Conflict, CommitUnknownResult...: the commit failed; this activation retires.
        """
        assert self.busy
        handler = self.actor.handler_for(message)
        if isinstance(message, ReminderFired):
            self._reminder_fired(message)
        turn_limit_s = self.runtime.turn_timeout_s
        limit_s = turn_limit_s if timeout_s is None else min(timeout_s, turn_limit_s)
        self.runtime.statistics_counters["turns"] += 1
        deadline = asyncio.timeout(limit_s)
        try:
            async with deadline:
                reply = await handler(self.actor, self.context, message)
            if reply is not None:
                encode(reply, what=f"reply of {type(self.actor).__name__} to {type(message).__name__}")
        except TimeoutError as error:
            self.rollback()
            self.runtime.statistics_counters["turns_failed"] += 1
            if not deadline.expired():  # the handler's own TimeoutError, not the turn's limit
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
            self.rollback()
            self.runtime.statistics_counters["turns_failed"] += 1
            raise
        except Exception as error:
            self.rollback()
            self.runtime.statistics_counters["turns_failed"] += 1
            raise HandlerFailed(
                f"actor {self.actor_id} handler for {type(message).__name__} raised "
                f"{type(error).__name__}: {error}; the turn was rolled back"
            ) from error
        except BaseException:  # cancelled mid-turn: nothing of it is kept
            self.rollback()
            raise
        await self.commit()
        self.last_active_s = self.runtime.env.clock.monotonic_s()
        self.idle_noticed = False
        return reply

    async def run_hook(self, hook_name: str) -> None:
        """Run a lifecycle hook (``on_activate``...) as a turn; the caller must hold ``busy``."""
        hook = getattr(self.actor, hook_name)
        try:
            async with asyncio.timeout(self.runtime.turn_timeout_s):
                await hook(self.context)
        except BaseException:
            self.rollback()
            raise
        await self.commit()

    def rollback(self) -> None:
        self.state = decode_state(self._committed_state, self._state_type)
        self.kv.pending.clear()
        self._reminder_changes.clear()

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
            self.rollback()
            raise
        state_changed = state_bytes != self._committed_state
        if not state_changed and not self.kv.pending and not self._reminder_changes:
            return
        if len(state_bytes) > limits.ACTOR_STATE_BYTES_LIMIT:
            self.rollback()
            raise InvalidArgument(
                f"actor {self.actor_id} state of {len(state_bytes)} bytes exceeds the limit of "
                f"{limits.ACTOR_STATE_BYTES_LIMIT} bytes; keep large data in ctx.kv; rolled back"
            )
        kv_writes = dict(self.kv.pending)
        reminder_changes = dict(self._reminder_changes)
        write_bytes = len(state_bytes) + sum(len(key) + len(value or b"") for key, value in kv_writes.items())
        if write_bytes > limits.ACTOR_TURN_WRITES_BYTES_LIMIT:
            self.rollback()
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
        self._committed_state = state_bytes
        self.kv.pending.clear()
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
