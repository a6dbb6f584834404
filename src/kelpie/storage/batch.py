"""Planning a group commit: which transactions of a batch commit, and their combined effect.

The SQL backends commit many transactions in one engine transaction. Each request is checked, in
order, against the store's conflict history (the backend looks that up) and against the requests
accepted before it in the same batch (done here), then given the next version. The accepted
requests' effects are folded into one set of cleared ranges and one set of writes, so the backend
applies the whole batch with a handful of statements whatever its size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kelpie.errors import Conflict, KelpieError, TransactionTooOld
from kelpie.storage.backend import CommitRequest, KeyRange

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


def _overlaps(read_ranges: Sequence[KeyRange], write_ranges: Sequence[KeyRange]) -> bool:
    return any(
        read_begin < write_end and write_begin < read_end
        for read_begin, read_end in read_ranges
        for write_begin, write_end in write_ranges
    )


def plan_batch(
    requests: Sequence[CommitRequest],
    *,
    version: int,
    pruned_through_version: int,
    stored_conflicts: Mapping[int, int],
) -> BatchPlan:
    """Decide each request's fate and fold the accepted ones' effects together.

    ``version`` is the store's newest version before the batch; ``stored_conflicts`` maps the index
    of each request whose reads overlap the store's conflict history after its read version to the
    version of one such commit.
    """
    plan = BatchPlan(version=version)
    accepted_write_ranges: list[KeyRange] = []
    for index, request in enumerate(requests):
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
            if index in stored_conflicts:
                plan.outcomes.append(
                    Conflict(
                        f"a key this transaction read at version {read_version} was written by the "
                        f"commit at version {stored_conflicts[index]}"
                    )
                )
                continue
            if _overlaps(request.read_conflict_ranges, accepted_write_ranges):
                plan.outcomes.append(
                    Conflict(
                        f"a key this transaction read at version {read_version} was written by a "
                        "commit in the same group commit"
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
        accepted_write_ranges.extend(request.write_conflict_ranges)
        plan.conflict_log.extend((plan.version, begin, end) for begin, end in request.write_conflict_ranges)
    assert len(plan.outcomes) == len(requests)
    return plan
