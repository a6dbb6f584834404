"""Planning a group commit: which transactions of a batch commit, and their combined effect.

The SQL backends commit many transactions in one engine transaction. Each request is checked, in
order, against the store's conflict history (the backend looks that up) and against the requests
accepted before it in the same batch (done here), then given the next version. The accepted
requests' effects are folded into one set of cleared ranges and one set of writes, so the backend
applies the whole batch with a handful of statements whatever its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kelpie.errors import Conflict, KelpieError, TransactionTooOld
from kelpie.storage.backend import CommitRequest, KeyRange
from kelpie.storage.conflicts import ConflictIndex

__all__ = ["BatchPlan", "plan_batch"]


@dataclass(kw_only=True)
class BatchPlan:
    """The outcome of each request, and what to write for those that commit."""

    outcomes: list[int | KelpieError] = field(default_factory=list)
    cleared_ranges: list[KeyRange] = field(default_factory=list)  # applied first, in order
    writes: dict[bytes, bytes | None] = field(default_factory=dict)  # then these; None clears
    conflict_log: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (version, begin, end)
    version: int = 0  # the newest version after the batch

    @property
    def upserts(self) -> list[tuple[bytes, bytes]]:
        return [(key, value) for key, value in self.writes.items() if value is not None]

    @property
    def deletions(self) -> list[bytes]:
        return [key for key, value in self.writes.items() if value is None]


def plan_batch(
    requests: Sequence[CommitRequest],
    *,
    version: int,
    pruned_through_version: int,
    history: ConflictIndex,
) -> BatchPlan:
    """Decide each request's fate and fold the accepted ones' effects together.

    ``version`` is the store's newest version before the batch; ``history`` holds the write ranges
    of the store's commits after ``pruned_through_version`` (it is not changed here: the backend
    adds the batch's entries once the batch is durable).
    """
    plan = BatchPlan(version=version)
    in_batch = ConflictIndex()
    for request in requests:
        read_version = request.read_version
        if read_version is not None:
            assert read_version <= version, (read_version, version)
            if read_version < pruned_through_version:
                plan.outcomes.append(
                    TransactionTooOld(
                        f"read version {read_version} is older than the conflict history "
                        f"(kept from version {pruned_through_version})"
                    )
                )
                continue
            conflict_version = history.newest_conflict(read_version, request.read_conflict_ranges)
            if conflict_version is None:
                conflict_version = in_batch.newest_conflict(read_version, request.read_conflict_ranges)
            if conflict_version is not None:
                plan.outcomes.append(
                    Conflict(
                        f"a key this transaction read at version {read_version} was written by the "
                        f"commit at version {conflict_version}"
                    )
                )
                continue
        plan.version += 1
        plan.outcomes.append(plan.version)
        for begin, end in request.cleared_ranges:
            for key in [key for key in plan.writes if begin <= key < end]:
                del plan.writes[key]
            plan.cleared_ranges.append((begin, end))
        plan.writes.update(request.writes)
        in_batch.add(plan.version, request.write_conflict_ranges)
        plan.conflict_log.extend((plan.version, begin, end) for begin, end in request.write_conflict_ranges)
    assert len(plan.outcomes) == len(requests)
    return plan
