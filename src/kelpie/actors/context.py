"""The handle a turn uses: id, state, a buffered key-value view, env, refs, timers, reminders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kelpie import limits
from kelpie.actors.ids import ActorId
from kelpie.env import Env
from kelpie.errors import InvalidArgument, shorten
from kelpie.storage import Database, Subspace, strinc
from kelpie.storage.keys import check_key, check_value

if TYPE_CHECKING:
    from kelpie.actors.activation import Activation
    from kelpie.actors.runtime import ActorRef

__all__ = ["ActorContext", "ActorKV"]

_DELETED = None


class ActorKV:
    """An actor-scoped key-value view. Writes are buffered and commit with the turn.

    Reads see this turn's writes first, then the committed store; the actor is the only writer of
    its keys (fencing guarantees it), so committed reads are current.
    """

    def __init__(self, db: Database, subspace: Subspace) -> None:
        self._db = db
        self._subspace = subspace
        self.pending: dict[bytes, bytes | None] = {}

    def _full_key(self, key: bytes) -> bytes:
        check_key(key)
        # Checked again under the actor's prefix: refused in the turn, not by the commit (which
        # would retire the activation).
        return check_key(self._subspace.pack((key,)))

    async def get(self, key: bytes) -> bytes | None:
        """The value at ``key`` as this turn sees it, or ``None``."""
        full = self._full_key(key)
        if full in self.pending:
            return self.pending[full]
        async with self._db.transaction() as tr:
            return await tr.get(full, snapshot=True)

    def set(self, key: bytes, value: bytes) -> None:
        """Write ``value`` at ``key`` when the turn commits."""
        full = self._full_key(key)
        check_value(full, value)
        self.pending[full] = value

    def delete(self, key: bytes) -> None:
        """Remove ``key`` when the turn commits."""
        self.pending[self._full_key(key)] = _DELETED

    async def items(self, *, prefix: bytes = b"", limit: int = 1000) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` pairs whose key starts with ``prefix``, in key order, as this turn sees them."""
        if type(limit) is not int or not 1 <= limit <= 100_000:
            raise InvalidArgument(f"limit must be an int in [1, 100000], got {shorten(limit)}")
        check_key(prefix)
        begin = self._subspace.pack((prefix,))[:-1]  # the packed prefix without its terminator
        end = strinc(begin)
        async with self._db.transaction() as tr:
            stored = dict(await tr.get_range(begin, end, snapshot=True))
        for key, value in self.pending.items():
            if begin <= key < end:
                if value is None:
                    stored.pop(key, None)
                else:
                    stored[key] = value
        rows = sorted(stored.items())[:limit]
        return [(self._user_key(key), value) for key, value in rows]

    def _user_key(self, full_key: bytes) -> bytes:
        (key,) = self._subspace.unpack(full_key)
        assert isinstance(key, bytes)
        return key


class ActorContext:
    """Given to every handler and lifecycle hook of one activation."""

    def __init__(self, activation: Activation) -> None:
        self._activation = activation

    @property
    def kv(self) -> ActorKV:
        """The actor's key-value view; writes commit with the turn."""
        return self._activation.kv

    @property
    def id(self) -> ActorId:
        return self._activation.actor_id

    @property
    def env(self) -> Env:
        return self._activation.runtime.env

    @property
    def state(self) -> Any:
        """The actor's state; changes commit at the end of the turn (or at :meth:`checkpoint`)."""
        return self._activation.state

    @state.setter
    def state(self, value: Any) -> None:
        self._activation.state = value

    @property
    def epoch(self) -> int:
        """This activation's fencing epoch."""
        return self._activation.epoch

    def ref(self, actor_id: ActorId) -> ActorRef:
        """A reference to another actor, to ``request`` or ``send`` from this turn."""
        return self._activation.runtime.ref(actor_id)

    async def checkpoint(self) -> None:
        """Commit the turn's writes so far, durably and fenced; the turn goes on.

        A later failure in the same turn rolls back to this point, not to the turn's start.
        """
        await self._activation.commit()

    def set_timer(self, name: str, delay_s: float, *, period_s: float | None = None) -> None:
        """Deliver :class:`~kelpie.actors.actor.TimerFired` after ``delay_s`` (then every ``period_s``).

        Timers are volatile: they die with the activation. They fire as turns of their own.

        Raises:
            InvalidArgument: a bad name, delay or period, or too many timers.
            NoHandler: the actor has no handler for ``TimerFired``.
        """
        self._activation.runtime.timers.set(self._activation, name, delay_s, period_s)

    def cancel_timer(self, name: str) -> None:
        self._activation.runtime.timers.cancel(self._activation.actor_id, name)

    def set_reminder(self, name: str, delay_s: float, *, period_s: float | None = None) -> None:
        """Durably deliver :class:`~kelpie.actors.actor.ReminderFired` after ``delay_s``.

        Reminders survive restarts and activate their actor. Written when this turn commits.
        """
        self._activation.set_reminder(name, delay_s, period_s)

    def cancel_reminder(self, name: str) -> None:
        self._activation.cancel_reminder(name)


def reminder_name(name: object) -> str:
    if type(name) is not str or not name or len(name) > limits.ACTOR_ID_PART_CHARS_LIMIT:
        raise InvalidArgument(
            f"timer or reminder name must be a non-empty string of at most "
            f"{limits.ACTOR_ID_PART_CHARS_LIMIT} characters, got {shorten(name)}"
        )
    return name
