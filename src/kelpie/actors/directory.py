"""Nodes, heartbeats, the activation directory, and fencing.

Every runtime is a node with a fresh id and a heartbeat record in the store. The directory maps
each actor to ``(node or None, epoch)``. Activating claims the entry and bumps the epoch in one
transaction; every commit of the actor's state re-reads the entry in the same transaction and
fails with :class:`~kelpie.errors.Fenced` unless it still names this node and epoch. So a stale
activation can never commit, whatever the clocks say.

Liveness is judged by each observer with its own monotonic clock only: a node is dead to an
observer once its heartbeat counter has not changed for ``failure_timeout_s`` of the observer's
time, or once its record is gone (clean shutdown). Clocks are never compared across nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from kelpie.actors.ids import ActorId
from kelpie.env import Env
from kelpie.errors import ActorActiveElsewhere, CorruptData, Fenced
from kelpie.storage import Database, Subspace, Transaction, pack, transactional, unpack

__all__ = ["DirectoryEntry", "NodeDirectory", "actor_subspace"]

_ROOT = Subspace(("kelpie", "actors"))
_DIRECTORY = _ROOT["directory"]
_NODES = _ROOT["nodes"]


def actor_subspace(kind: str, actor_id: ActorId) -> Subspace:
    """Where an actor's data of one ``kind`` (``state``, ``kv``, ``reminders``) lives."""
    return _ROOT.subspace((kind, actor_id.namespace, actor_id.type, actor_id.key))


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    node_id: str | None
    epoch: int


def _decode_entry(raw: bytes | None) -> DirectoryEntry:
    if raw is None:
        return DirectoryEntry(None, 0)
    items = unpack(raw)
    if (
        len(items) != 2
        or not isinstance(items[1], int)
        or not (items[0] is None or isinstance(items[0], str))
    ):
        raise CorruptData(f"directory entry is malformed: {raw!r}")
    return DirectoryEntry(items[0], items[1])


def directory_key(actor_id: ActorId) -> bytes:
    return _DIRECTORY.pack(tuple(actor_id))


class NodeDirectory:
    """This node's view of the cluster: its own heartbeat, others' liveness, and the directory."""

    def __init__(self, db: Database, env: Env, *, node_id: str, failure_timeout_s: float) -> None:
        self._db = db
        self._env = env
        self.node_id = node_id
        self._failure_timeout_s = failure_timeout_s
        self._heartbeat = 0
        # node id -> (last counter seen, this observer's monotonic time when it was first seen)
        self._observed: dict[str, tuple[int, float]] = {}

    # --- this node ---------------------------------------------------------------------------------

    async def register(self) -> None:
        async def body(tr: Transaction) -> None:
            tr.set(_NODES.pack((self.node_id,)), pack((0, self._env.clock.wall_s())))

        await transactional(self._db, body)

    async def beat(self) -> None:
        """Advance this node's heartbeat counter (observers watch it change)."""
        self._heartbeat += 1
        counter = self._heartbeat
        key = _NODES.pack((self.node_id,))

        async def body(tr: Transaction) -> None:
            # Read first: a beat racing a clean shutdown's unregister must not bring the record
            # back (observers would then wait out the failure timeout instead of taking over).
            if await tr.get(key) is None:
                return
            tr.set(key, pack((counter, self._env.clock.wall_s())))

        await transactional(self._db, body)

    async def unregister(self) -> None:
        """Remove this node's record: observers treat its activations as free at once."""

        async def body(tr: Transaction) -> None:
            tr.clear(_NODES.pack((self.node_id,)))

        await transactional(self._db, body)

    # --- other nodes -------------------------------------------------------------------------------

    async def _is_alive(self, tr: Transaction, node_id: str) -> bool:
        raw = await tr.get(_NODES.pack((node_id,)), snapshot=True)
        if raw is None:
            self._observed.pop(node_id, None)
            return False
        counter = unpack(raw)[0]
        assert isinstance(counter, int), raw
        now_s = self._env.clock.monotonic_s()
        seen = self._observed.get(node_id)
        if seen is None or seen[0] != counter:
            self._observed[node_id] = (counter, now_s)
            return True
        return now_s - seen[1] < self._failure_timeout_s

    # --- the directory -----------------------------------------------------------------------------

    async def claim(self, tr: Transaction, actor_id: ActorId) -> int:
        """Within ``tr``: take the activation for this node and return the new epoch.

        Raises:
            ActorActiveElsewhere: a node this observer believes alive holds it.
        """
        key = directory_key(actor_id)
        entry = _decode_entry(await tr.get(key))
        holder = entry.node_id
        if holder is not None and holder != self.node_id and await self._is_alive(tr, holder):
            raise ActorActiveElsewhere(actor_id, holder)
        epoch = entry.epoch + 1
        tr.set(key, pack((self.node_id, epoch)))
        return epoch

    async def check_fence(self, tr: Transaction, actor_id: ActorId, epoch: int) -> None:
        """Within ``tr``: raise unless this node still holds ``actor_id`` at ``epoch``.

        Raises:
            Fenced: the directory names another node or a newer epoch.
        """
        entry = _decode_entry(await tr.get(directory_key(actor_id)))
        if entry.node_id != self.node_id or entry.epoch != epoch:
            raise Fenced(
                f"actor {actor_id} activation at epoch {epoch} on node {self.node_id} is fenced: "
                f"the directory names node {entry.node_id} at epoch {entry.epoch}"
            )

    async def release(self, tr: Transaction, actor_id: ActorId, epoch: int) -> None:
        """Within ``tr``: give the activation up if this node still holds it at ``epoch``."""
        key = directory_key(actor_id)
        entry = _decode_entry(await tr.get(key))
        if entry.node_id == self.node_id and entry.epoch == epoch:
            tr.set(key, pack((None, epoch)))

    async def entry(self, actor_id: ActorId) -> DirectoryEntry:
        async with self._db.transaction() as tr:
            return _decode_entry(await tr.get(directory_key(actor_id), snapshot=True))
