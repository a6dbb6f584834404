"""Durable reminders: a due-time index in the store, polled by every node.

A reminder lives in two keys written in the same transaction as the turn that set it: one under
the actor (name -> due time, period) and one in a global index ordered by due time. Every node polls
the index for due entries and delivers :class:`~kelpie.actors.actor.ReminderFired` to the actor,
activating it if needed (a node that finds the actor active elsewhere leaves it to the owner). The
turn that handles the reminder advances or removes it in its own commit, so a reminder whose turn
fails fires again, and one whose turn commits does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from kelpie import limits
from kelpie.actors.actor import ReminderFired
from kelpie.actors.ids import ActorId
from kelpie.env import Env
from kelpie.errors import KelpieError
from kelpie.storage import Database, Subspace

__all__ = ["ReminderService", "reminder_due_key"]

_DUE = Subspace(("kelpie", "actors", "reminders-due"))


def reminder_due_key(due_wall_s: float, actor_id: ActorId, name: str) -> bytes:
    return _DUE.pack((float(due_wall_s), actor_id.namespace, actor_id.type, actor_id.key, name))


class ReminderService:
    """Finds due reminders and hands them to ``deliver``; run by the runtime's task group."""

    def __init__(
        self,
        db: Database,
        env: Env,
        deliver: Callable[[ActorId, ReminderFired], Awaitable[None]],
    ) -> None:
        self._db = db
        self._env = env
        self._deliver = deliver

    async def due(self) -> list[tuple[ActorId, ReminderFired]]:
        """Reminders due now, oldest first, at most :data:`kelpie.limits.REMINDER_BATCH_LIMIT`."""
        begin, _ = _DUE.range()
        end = _DUE.pack((self._env.clock.wall_s(),)) + b"\xff"
        async with self._db.transaction() as tr:
            rows = await tr.get_range(begin, end, limit=limits.REMINDER_BATCH_LIMIT, snapshot=True)
        found = []
        for key, _ in rows:
            due_wall_s, namespace, type_name, actor_key, name = _DUE.unpack(key)
            assert isinstance(due_wall_s, float)
            assert isinstance(namespace, str)
            assert isinstance(type_name, str)
            assert isinstance(actor_key, str)
            assert isinstance(name, str)
            found.append((ActorId(namespace, type_name, actor_key), ReminderFired(name, due_wall_s)))
        return found

    async def poll_once(self) -> int:
        """Deliver every due reminder once; return how many were delivered."""
        delivered = 0
        for actor_id, fired in await self.due():
            await self._deliver(actor_id, fired)
            delivered += 1
        return delivered

    async def run(self, interval_s: float) -> None:
        while True:
            # A poll the store fails is tried again next interval; it must not stop the node.
            with contextlib.suppress(KelpieError):
                await self.poll_once()
            await self._env.clock.sleep(interval_s)
