"""The virtual actor runtime: on-demand activation, turns, idle deactivation, shutdown.

::

    async with ActorRuntime(db, actor_types=[Counter]) as runtime:
        total = await runtime.ref(ActorId.of("default", "counter", "c-1")).request(Add(5))

A request to an idle activation runs its turn inline in the caller's task (no task switch: the hot
path); otherwise the message waits in the activation's bounded mailbox and a drainer task, owned by
the runtime's task group, runs the queued turns in order and exits when the mailbox is empty. So
an idle actor owns no task. Background work (heartbeat, idle sweep, reminders, timers) belongs to
the same task group; leaving the ``async with`` drains turns, deactivates every actor, commits, and
stops it all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kelpie import limits
from kelpie.actors.activation import Activation, ActivationStatus, Envelope, read_state
from kelpie.actors.actor import Actor, ReminderFired, TimerFired
from kelpie.actors.codec import decode_state
from kelpie.actors.directory import NodeDirectory
from kelpie.actors.ids import ActorId
from kelpie.actors.reminders import ReminderService
from kelpie.actors.timers import TimerScheduler
from kelpie.env import Env
from kelpie.errors import (
    ActivationFailed,
    ActorActiveElsewhere,
    Conflict,
    Fenced,
    InvalidActorId,
    InvalidArgument,
    KelpieError,
    Overloaded,
    RequestTimedOut,
    RuntimeStopped,
    UnknownActorType,
    shorten,
)
from kelpie.storage import Database, Transaction, transactional

__all__ = ["ActorRef", "ActorRuntime", "RuntimeStatistics"]

BuggifyHook = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeStatistics:
    """A snapshot of one runtime's counters."""

    node_id: str
    activations: int
    busy_activations: int
    queued_messages: int
    queue_depth_max: int
    activations_total: int
    deactivations_total: int
    turns: int
    turns_failed: int
    commits: int
    conflicts: int
    fenced: int
    retired: int


class ActorRef:
    """A location-transparent handle on an actor; cheap, and valid forever."""

    __slots__ = ("actor_id", "runtime")

    def __init__(self, runtime: ActorRuntime, actor_id: ActorId) -> None:
        self.runtime = runtime
        self.actor_id = actor_id

    async def request(self, message: object, *, timeout_s: float | None = None) -> Any:
        """Deliver ``message`` as one turn and return the handler's reply, once durable."""
        return await self.runtime.request(self.actor_id, message, timeout_s=timeout_s)

    async def send(self, message: object) -> None:
        """Queue ``message``; returns once it is accepted into the mailbox."""
        await self.runtime.send(self.actor_id, message)

    def __repr__(self) -> str:
        return f"<ActorRef {self.actor_id}>"


async def _no_buggify(site: str) -> None:
    return None


def _consume_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class ActorRuntime:
    """A node of the actor system. Use as ``async with ActorRuntime(...) as runtime``."""

    def __init__(
        self,
        db: Database,
        *,
        actor_types: Iterable[type[Actor]],
        node_id: str | None = None,
        idle_timeout_s: float = limits.ACTOR_IDLE_TIMEOUT_S_DEFAULT,
        idle_notice_s: float | None = None,
        turn_timeout_s: float = limits.ACTOR_TURN_TIMEOUT_S_DEFAULT,
        mailbox_limit: int = limits.ACTOR_MAILBOX_MESSAGES_LIMIT,
        heartbeat_interval_s: float = limits.NODE_HEARTBEAT_INTERVAL_S_DEFAULT,
        failure_timeout_s: float = limits.NODE_FAILURE_TIMEOUT_S_DEFAULT,
        reminder_poll_interval_s: float = limits.REMINDER_POLL_INTERVAL_S_DEFAULT,
        buggify: BuggifyHook | None = None,
    ) -> None:
        self.db = db
        self.env: Env = db.env
        for name, value in (
            ("idle_timeout_s", idle_timeout_s),
            ("idle_notice_s", 1.0 if idle_notice_s is None else idle_notice_s),  # None: a third of idle
            ("turn_timeout_s", turn_timeout_s),
            ("heartbeat_interval_s", heartbeat_interval_s),
            ("failure_timeout_s", failure_timeout_s),
            ("reminder_poll_interval_s", reminder_poll_interval_s),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 10**7:
                raise InvalidArgument(f"{name} must be a positive number of seconds, got {shorten(value)}")
        if type(mailbox_limit) is not int or not 1 <= mailbox_limit <= limits.ACTOR_MAILBOX_MESSAGES_LIMIT:
            raise InvalidArgument(
                f"mailbox_limit must be an int in [1, {limits.ACTOR_MAILBOX_MESSAGES_LIMIT}], "
                f"got {shorten(mailbox_limit)}"
            )
        self._types: dict[str, type[Actor]] = {}
        for actor_type in actor_types:
            self.register(actor_type)
        self.node_id = node_id or f"node-{self.env.ids.uuid4()}"
        self.idle_timeout_s = float(idle_timeout_s)
        self.idle_notice_s = float(idle_notice_s) if idle_notice_s is not None else self.idle_timeout_s / 3
        self.turn_timeout_s = float(turn_timeout_s)
        self.mailbox_limit = mailbox_limit
        self.heartbeat_interval_s = float(heartbeat_interval_s)
        self.reminder_poll_interval_s = float(reminder_poll_interval_s)
        self.directory = NodeDirectory(
            db, self.env, node_id=self.node_id, failure_timeout_s=failure_timeout_s
        )
        self.timers = TimerScheduler(self.env, self._fire_timer)
        self.reminders = ReminderService(db, self.env, self._deliver_reminder)
        self.buggify: BuggifyHook = buggify or _no_buggify
        self._activations: dict[ActorId, Activation] = {}
        self._activating: dict[ActorId, asyncio.Future[Activation]] = {}
        self._unreleased: dict[ActorId, int] = {}  # deactivated, directory release still owed
        self._task_group: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self._accepting = False
        self._queue_depth_max = 0
        self.statistics_counters: collections.Counter[str] = collections.Counter()

    # --- registration ------------------------------------------------------------------------------

    def register(self, actor_type: type[Actor]) -> None:
        """Serve actors of ``actor_type`` under its ``type_name``."""
        if not (isinstance(actor_type, type) and issubclass(actor_type, Actor)):
            raise InvalidArgument(f"actor types must be Actor subclasses, got {shorten(actor_type)}")
        name = getattr(actor_type, "type_name", None)
        if type(name) is not str or not name or "/" in name:
            raise InvalidArgument(f"{actor_type.__name__}.type_name must be a non-empty string without '/'")
        existing = self._types.get(name)
        if existing is not None and existing is not actor_type:
            raise InvalidArgument(f"actor type name {name!r} is already registered to {existing.__name__}")
        self._types[name] = actor_type

    def actor_type(self, actor_id: ActorId) -> type[Actor]:
        """The class serving ``actor_id``; checked on every path that may activate or read an actor.

        Raises:
            InvalidActorId: ``actor_id`` is not a well-formed :class:`ActorId`.
            UnknownActorType: no class is registered under its type name.
        """
        if not isinstance(actor_id, ActorId):
            raise InvalidActorId(
                f"expected an ActorId, got {shorten(actor_id)}; use ActorId.parse('ns/type/key')"
            )
        ActorId.of(*actor_id)  # the plain constructor does not validate; ids reach the store
        found = self._types.get(actor_id.type)
        if found is None:
            raise UnknownActorType(
                f"unknown actor type {actor_id.type!r} in {actor_id}; registered: {sorted(self._types)}"
            )
        return found

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> ActorRuntime:
        await self.directory.register()
        self._task_group = asyncio.TaskGroup()
        await self._task_group.__aenter__()
        self._accepting = True
        self._background = [
            self._task_group.create_task(self._heartbeat_loop(), name=f"heartbeat {self.node_id}"),
            self._task_group.create_task(self._idle_loop(), name=f"idle sweep {self.node_id}"),
            self._task_group.create_task(
                self.reminders.run(self.reminder_poll_interval_s), name=f"reminders {self.node_id}"
            ),
            self._task_group.create_task(self.timers.run(), name=f"timers {self.node_id}"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._task_group is not None
        try:
            await self.shutdown()
        finally:
            for task in self._background:
                task.cancel()
            # An ordinary exception from the body propagates as itself, not wrapped in the task
            # group's ExceptionGroup; cancellation still reaches the group, which needs to see it.
            if isinstance(exc, Exception):
                exc_type, exc, traceback = None, None, None
            await self._task_group.__aexit__(exc_type, exc, traceback)
            self._task_group = None

    async def shutdown(self) -> None:
        """Stop accepting messages, finish queued turns, deactivate (and commit) every actor."""
        if not self._accepting:
            return
        self._accepting = False
        # Activations under way finish first (their callers came before the shutdown); then each
        # activation is deactivated, or, if another deactivation got there first, awaited.
        while self._activating or self._activations:
            if self._activating:
                await asyncio.wait(list(self._activating.values()))
            for activation in list(self._activations.values()):
                if activation.status is ActivationStatus.ACTIVE:
                    await self._deactivate(activation, reason="shutdown")
                else:
                    await activation.retired_event().wait()
        with contextlib.suppress(KelpieError):  # storage gone: observers will time us out instead
            await self.directory.unregister()

    # --- addressing --------------------------------------------------------------------------------

    def ref(self, actor_id: ActorId) -> ActorRef:
        """A reference to ``actor_id`` (nothing is activated until a message arrives).

        Raises:
            InvalidActorId, UnknownActorType.
        """
        self.actor_type(actor_id)
        return ActorRef(self, actor_id)

    async def request(self, actor_id: ActorId, message: object, *, timeout_s: float | None = None) -> Any:
        """Run ``message`` as a turn of ``actor_id`` and return its durable reply.

        Raises:
            UnknownActorType, NoHandler: checked before anything runs.
            Overloaded: the mailbox is full.
            RequestTimedOut: no reply within ``timeout_s`` (a queued message may still run).
            ActivationFailed, ActorActiveElsewhere, HandlerFailed, TurnTimedOut, Fenced...
        """
        if timeout_s is not None and (
            not isinstance(timeout_s, int | float) or isinstance(timeout_s, bool) or not 0 < timeout_s < 10**7
        ):
            raise InvalidArgument(f"timeout_s must be a positive number or None, got {shorten(timeout_s)}")
        activation = self._activations.get(actor_id)
        if activation is None or activation.status is not ActivationStatus.ACTIVE:
            self.actor_type(actor_id).handler_for(message)  # bad input fails before any activation
            activation = await self._activation_for(actor_id)
        handler = activation.actor.handler_for(message)
        if not activation.busy and not activation.mailbox:
            activation.busy = True
            try:
                return await activation.run_turn(message, timeout_s, handler)
            finally:
                self._turn_finished(activation)
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(activation, Envelope(message, reply))
        if timeout_s is None:
            return await reply
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(reply)
        except TimeoutError:
            reply.add_done_callback(_consume_outcome)  # the turn may still finish; nobody waits
            raise RequestTimedOut(
                f"actor {actor_id} did not reply to {type(message).__name__} within {timeout_s} s; "
                "the message is still queued and may run"
            ) from None

    async def send(self, actor_id: ActorId, message: object) -> None:
        """Queue ``message`` for ``actor_id``; return once it is in the mailbox.

        Raises:
            UnknownActorType, NoHandler, Overloaded, ActivationFailed, ActorActiveElsewhere.
        """
        activation = self._activations.get(actor_id)
        if activation is None or activation.status is not ActivationStatus.ACTIVE:
            self.actor_type(actor_id).handler_for(message)
            activation = await self._activation_for(actor_id)
        activation.actor.handler_for(message)
        self._enqueue(activation, Envelope(message, None))

    def _enqueue(self, activation: Activation, envelope: Envelope) -> None:
        if activation.mailbox is not None and len(activation.mailbox) >= self.mailbox_limit:
            raise Overloaded(
                f"actor {activation.actor_id} mailbox is full ({self.mailbox_limit} messages); retry later"
            )
        mailbox = activation.mailbox
        if mailbox is None:
            mailbox = activation.mailbox = collections.deque()
        mailbox.append(envelope)
        self._queue_depth_max = max(self._queue_depth_max, len(mailbox))
        if not activation.busy:
            self._start_drainer(activation)

    def _start_drainer(self, activation: Activation) -> None:
        assert self._task_group is not None, "runtime is not running"
        activation.busy = True
        self._task_group.create_task(self._drain(activation), name=f"turns {activation.actor_id}")

    async def _drain(self, activation: Activation) -> None:
        """Run queued turns in order until the mailbox is empty. Owned by the task group."""
        try:
            while activation.mailbox and activation.status is not ActivationStatus.RETIRED:
                envelope = activation.mailbox.popleft()
                try:
                    reply = await activation.run_turn(envelope.message)
                except KelpieError as error:
                    if envelope.reply is not None and not envelope.reply.done():
                        envelope.reply.set_exception(error)
                    continue
                if envelope.reply is not None and not envelope.reply.done():
                    envelope.reply.set_result(reply)
        finally:
            self._turn_finished(activation)

    def _turn_finished(self, activation: Activation) -> None:
        activation.busy = False
        if activation.status is ActivationStatus.RETIRED:
            self._fail_queued(activation)
        elif activation.mailbox:
            if self._task_group is not None and self._background and not self._background[0].done():
                self._start_drainer(activation)
                return
            self._fail_queued(activation, RuntimeStopped(f"runtime {self.node_id} stopped"))
        while activation.quiet_waiters:
            waiter = activation.quiet_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _fail_queued(self, activation: Activation, error: KelpieError | None = None) -> None:
        while activation.mailbox:
            envelope = activation.mailbox.popleft()
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_exception(
                    error
                    or Fenced(
                        f"actor {activation.actor_id} activation retired before this message ran; resend it"
                    )
                )

    # --- activation --------------------------------------------------------------------------------

    async def _activation_for(self, actor_id: ActorId) -> Activation:
        while True:
            if not self._accepting:
                raise RuntimeStopped(f"runtime {self.node_id} is not accepting messages")
            activation = self._activations.get(actor_id)
            if activation is not None:
                if activation.status is ActivationStatus.ACTIVE:
                    return activation
                await activation.retired_event().wait()  # deactivating: wait, then activate afresh
                continue
            pending = self._activating.get(actor_id)
            if pending is not None:
                # Wait without taking on its outcome blindly: if its first caller was cancelled,
                # that cancellation is not ours, and we activate afresh.
                await asyncio.wait([pending])
                if not pending.cancelled():
                    error = pending.exception()
                    if isinstance(error, Exception):
                        raise error
                    if error is None and pending.result().status is ActivationStatus.ACTIVE:
                        return pending.result()
                continue
            return await self._activate(actor_id)

    async def _activate(self, actor_id: ActorId) -> Activation:
        actor_type = self.actor_type(actor_id)
        if len(self._activations) >= limits.ACTOR_ACTIVATIONS_LIMIT:
            raise Overloaded(f"runtime {self.node_id} holds {limits.ACTOR_ACTIVATIONS_LIMIT} activations")
        future: asyncio.Future[Activation] = asyncio.get_running_loop().create_future()
        self._activating[actor_id] = future
        try:
            activation = await self._load_and_activate(actor_id, actor_type)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: concurrent waiters re-raise it themselves
            raise
        else:
            future.set_result(activation)
            return activation
        finally:
            del self._activating[actor_id]

    async def _load_and_activate(self, actor_id: ActorId, actor_type: type[Actor]) -> Activation:
        await self.buggify("before directory claim")

        async def claim(tr: Transaction) -> tuple[int, bytes | None] | ActorActiveElsewhere:
            try:
                epoch = await self.directory.claim(tr, actor_id)
            except ActorActiveElsewhere as error:
                return error  # retryable by the caller, later; not by transactional, now
            return epoch, await read_state(tr, actor_id)

        claimed = await transactional(self.db, claim)
        if isinstance(claimed, ActorActiveElsewhere):
            raise claimed
        epoch, state_bytes = claimed
        try:
            actor = actor_type()
            state = (
                actor.initial_state()
                if state_bytes is None
                else decode_state(state_bytes, actor_type.state_type)
            )
            activation = Activation(
                self, actor_id, actor, epoch=epoch, state=state, committed_state=state_bytes
            )
            activation.busy = True
            try:
                await activation.run_hook("on_activate")
            finally:
                activation.busy = False
        except BaseException as error:
            self.timers.cancel_all(actor_id)  # set by on_activate: they would run a half-activated actor
            with contextlib.suppress(KelpieError):
                await self._release(actor_id, epoch)
            if isinstance(error, Exception):
                raise ActivationFailed(
                    f"actor {actor_id} failed to activate: {type(error).__name__}: {error}"
                ) from error
            raise
        self._activations[actor_id] = activation
        self.statistics_counters["activations_total"] += 1
        return activation

    async def _release(self, actor_id: ActorId, epoch: int) -> None:
        async def body(tr: Transaction) -> None:
            await self.directory.release(tr, actor_id, epoch)

        await transactional(self.db, body)

    # --- deactivation ------------------------------------------------------------------------------

    async def _deactivate(self, activation: Activation, *, reason: str) -> None:
        """Run ``on_deactivate`` as a final turn, commit, release the directory entry, forget."""
        if activation.status is not ActivationStatus.ACTIVE:
            return
        while activation.busy:  # let queued and running turns finish first
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if activation.quiet_waiters is None:
                activation.quiet_waiters = collections.deque()
            activation.quiet_waiters.append(waiter)
            await waiter
        if activation.status is not ActivationStatus.ACTIVE:
            return
        activation.status = ActivationStatus.DEACTIVATING
        activation.busy = True
        try:
            with contextlib.suppress(KelpieError, Exception):
                await activation.run_hook("on_deactivate")
            try:
                await self._release(activation.actor_id, activation.epoch)
            except KelpieError:
                # The entry still names this node: others would wait for it. The heartbeat retries.
                self._unreleased[activation.actor_id] = activation.epoch
        finally:
            activation.busy = False
            self._retire(activation)
            self.statistics_counters["deactivations_total"] += 1

    def _retire(self, activation: Activation) -> None:
        activation.status = ActivationStatus.RETIRED
        self.timers.cancel_all(activation.actor_id)
        if self._activations.get(activation.actor_id) is activation:
            del self._activations[activation.actor_id]
        if activation.retired is not None:
            activation.retired.set()
        if not activation.busy:
            self._fail_queued(activation)

    def note_commit_failure(self, activation: Activation, error: BaseException) -> None:
        """A commit failed: memory may no longer match the store, so this activation retires."""
        if isinstance(error, Fenced):
            self.statistics_counters["fenced"] += 1
        if isinstance(error, Conflict):
            self.statistics_counters["conflicts"] += 1
        if activation.status is not ActivationStatus.RETIRED:
            self.statistics_counters["retired"] += 1
            self._retire(activation)

    # --- background work ---------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.env.clock.sleep(self.heartbeat_interval_s)
            await self.buggify("before heartbeat")
            with contextlib.suppress(KelpieError):  # a missed beat only risks being fenced
                await self.directory.beat()
            await self.retry_releases()

    async def retry_releases(self) -> None:
        """Release directory entries whose release failed at deactivation (bounded per call)."""
        for actor_id, epoch in list(self._unreleased.items())[: limits.REMINDER_BATCH_LIMIT]:
            if actor_id in self._activations:  # active again here: the entry is ours once more
                del self._unreleased[actor_id]
                continue
            with contextlib.suppress(KelpieError):
                await self._release(actor_id, epoch)
                del self._unreleased[actor_id]

    async def _idle_loop(self) -> None:
        interval_s = min(self.idle_notice_s / 2, self.idle_timeout_s / 4, limits.IDLE_SWEEP_INTERVAL_S_MAX)
        while True:
            await self.env.clock.sleep(interval_s)
            await self.sweep_idle()

    async def sweep_idle(self) -> int:
        """Notify and deactivate idle activations; return how many were deactivated."""
        now_s = self.env.clock.monotonic_s()
        deactivated = 0
        for activation in list(self._activations.values()):
            if activation.busy or activation.mailbox or activation.status is not ActivationStatus.ACTIVE:
                continue
            idle_s = now_s - activation.last_active_s
            if idle_s >= self.idle_timeout_s:
                await self._deactivate(activation, reason="idle")
                deactivated += 1
            elif idle_s >= self.idle_notice_s and not activation.idle_noticed:
                activation.idle_noticed = True
                activation.busy = True
                try:
                    with contextlib.suppress(KelpieError, Exception):
                        await activation.run_hook("on_idle")
                finally:
                    self._turn_finished(activation)
        return deactivated

    def _fire_timer(self, activation: Activation, fired: TimerFired) -> None:
        queued = len(activation.mailbox) if activation.mailbox is not None else 0
        if activation.status is not ActivationStatus.ACTIVE or queued >= self.mailbox_limit:
            return  # volatile by definition: a timer for a gone or saturated actor is dropped
        self._enqueue(activation, Envelope(fired, None))

    async def _deliver_reminder(self, actor_id: ActorId, fired: ReminderFired) -> None:
        # Active elsewhere: the owner delivers it. A failed turn leaves it due: it fires again.
        with contextlib.suppress(ActorActiveElsewhere, RuntimeStopped, UnknownActorType, KelpieError):
            await self.request(actor_id, fired)

    # --- reads and statistics ----------------------------------------------------------------------

    async def read_state(self, actor_id: ActorId) -> Any:
        """The actor's committed state, read from the store without a turn (``None`` if never
        committed). Never waits behind a running turn."""
        actor_type = self.actor_type(actor_id)
        async with self.db.transaction() as tr:
            state_bytes = await read_state(tr, actor_id, snapshot=True)
        return None if state_bytes is None else decode_state(state_bytes, actor_type.state_type)

    def is_active(self, actor_id: ActorId) -> bool:
        activation = self._activations.get(actor_id)
        return activation is not None and activation.status is ActivationStatus.ACTIVE

    def statistics(self) -> RuntimeStatistics:
        counters = self.statistics_counters
        activations = list(self._activations.values())
        return RuntimeStatistics(
            node_id=self.node_id,
            activations=len(activations),
            busy_activations=sum(1 for activation in activations if activation.busy),
            queued_messages=sum(len(activation.mailbox or ()) for activation in activations),
            queue_depth_max=self._queue_depth_max,
            activations_total=counters["activations_total"],
            deactivations_total=counters["deactivations_total"],
            turns=counters["turns"],
            turns_failed=counters["turns_failed"],
            commits=counters["commits"],
            conflicts=counters["conflicts"],
            fenced=counters["fenced"],
            retired=counters["retired"],
        )
