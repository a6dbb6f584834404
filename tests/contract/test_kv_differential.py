"""Every backend against a dict model, with interleaved concurrent transactions and conflicts.

The model predicts each read's result and each commit's fate exactly: a transaction takes its
snapshot when it first consults the store, records a read conflict range for every read the store
served (the part of a limited range read it saw), and conflicts if a commit after its snapshot
wrote into one of those ranges.
"""

from __future__ import annotations

import asyncio
import collections
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from kelpie.env import Env
from kelpie.errors import Conflict
from kelpie.storage import Database, Transaction, open_database
from tests.conftest import ManualClock, make_store_url

KEYS = st.sampled_from([b"", b"\x00", b"a", b"a\x00", b"ab", b"b", b"\xff"])
HOT_KEYS = st.sampled_from([b"a", b"b"])  # contended by read-modify-writes: conflicts are common
VALUES = st.binary(min_size=0, max_size=8)
OPEN_TRANSACTIONS_LIMIT = 3


def after(key: bytes) -> bytes:
    return key + b"\x00"


@dataclass
class ModelTransaction:
    real: Transaction
    snapshot: dict[bytes, bytes] | None = None
    snapshot_commit_count: int = 0
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    cleared: list[tuple[bytes, bytes]] = field(default_factory=list)
    reads: list[tuple[bytes, bytes]] = field(default_factory=list)

    def is_cleared(self, key: bytes) -> bool:
        return any(begin <= key < end for begin, end in self.cleared)

    def view(self) -> dict[bytes, bytes]:
        assert self.snapshot is not None
        merged = {key: value for key, value in self.snapshot.items() if not self.is_cleared(key)}
        for key, value in self.writes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged


SLOTS = st.integers(min_value=0, max_value=OPEN_TRANSACTIONS_LIMIT - 1)


class StoreMachine(RuleBasedStateMachine):
    """Up to three transactions open at once, in slots; a rule on an empty slot begins one."""

    def __init__(
        self, db: Database, loop: asyncio.AbstractEventLoop, commit_outcomes: collections.Counter[bool]
    ) -> None:
        super().__init__()
        self.db = db
        self.loop = loop
        self.committed: dict[bytes, bytes] = {}
        self.history: list[list[tuple[bytes, bytes]]] = []  # write ranges of each commit, in order
        self.slots: list[ModelTransaction | None] = [None] * OPEN_TRANSACTIONS_LIMIT
        self.commit_outcomes = commit_outcomes

    def run(self, awaitable):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(awaitable)

    @initialize()
    def empty_the_store(self) -> None:
        async def clear() -> None:
            async with self.db.transaction() as tr:
                tr.clear_range(b"", b"\xff\xff")

        self.run(clear())

    def snapshot_of(self, model: ModelTransaction) -> None:
        if model.snapshot is None:
            model.snapshot = dict(self.committed)
            model.snapshot_commit_count = len(self.history)

    def slot(self, index: int) -> ModelTransaction:
        model = self.slots[index]
        if model is None:
            model = self.slots[index] = ModelTransaction(real=self.db.transaction())
        return model

    @rule(slot=SLOTS, key=KEYS, snapshot=st.booleans())
    def get(self, slot: int, key: bytes, snapshot: bool) -> None:
        model = self.slot(slot)
        if key in model.writes:
            expected = model.writes[key]
        elif model.is_cleared(key):
            expected = None
        else:
            self.snapshot_of(model)
            assert model.snapshot is not None
            expected = model.snapshot.get(key)
            if not snapshot:
                model.reads.append((key, after(key)))
        assert self.run(model.real.get(key, snapshot=snapshot)) == expected

    @rule(
        slot=SLOTS,
        begin=KEYS,
        end=KEYS,
        limit=st.sampled_from([None, 1, 2, 3]),
        reverse=st.booleans(),
    )
    def get_range(self, slot: int, begin: bytes, end: bytes, limit: int | None, reverse: bool) -> None:
        model = self.slot(slot)
        actual = self.run(model.real.get_range(begin, end, limit=limit, reverse=reverse))
        if begin >= end:
            assert actual == []
            return
        self.snapshot_of(model)
        rows = sorted((key, value) for key, value in model.view().items() if begin <= key < end)
        if reverse:
            rows.reverse()
        if limit is not None and len(rows) >= limit:
            rows = rows[:limit]
            seen = (rows[-1][0], end) if reverse else (begin, after(rows[-1][0]))
        else:
            seen = (begin, end)
        model.reads.append(seen)
        assert actual == rows

    @rule(slot=SLOTS, key=HOT_KEYS, value=VALUES)
    def read_modify_write(self, slot: int, key: bytes, value: bytes) -> None:
        """The usual shape of a transaction, and the one that makes conflicts."""
        self.get(slot, key, snapshot=False)
        self.set(slot, key, value)

    @rule(slot=SLOTS, key=KEYS, value=VALUES)
    def set(self, slot: int, key: bytes, value: bytes) -> None:
        model = self.slot(slot)
        model.real.set(key, value)
        model.writes[key] = value

    @rule(slot=SLOTS, key=KEYS)
    def clear(self, slot: int, key: bytes) -> None:
        model = self.slot(slot)
        model.real.clear(key)
        model.writes[key] = None

    @rule(slot=SLOTS, begin=KEYS, end=KEYS)
    def clear_range(self, slot: int, begin: bytes, end: bytes) -> None:
        model = self.slot(slot)
        model.real.clear_range(begin, end)
        if begin < end:
            for key in [key for key in model.writes if begin <= key < end]:
                del model.writes[key]
            model.cleared.append((begin, end))

    @rule(slot=SLOTS, abandon=st.sampled_from([False, False, False, False, True]))
    def finish(self, slot: int, abandon: bool) -> None:
        """Commit (usually) or cancel the transaction in ``slot``."""
        model = self.slot(slot)
        self.slots[slot] = None
        if abandon:
            self.run(model.real.cancel())
            return
        writes_anything = bool(model.writes or model.cleared)
        later_writes = [
            write_range for commit in self.history[model.snapshot_commit_count :] for write_range in commit
        ]
        conflicts = writes_anything and any(
            read_begin < write_end and write_begin < read_end
            for read_begin, read_end in model.reads
            for write_begin, write_end in later_writes
        )
        event(f"commit: conflict={conflicts} writes={writes_anything}")
        self.commit_outcomes[conflicts] += 1
        if conflicts:
            with pytest.raises(Conflict):
                self.run(model.real.commit())
            return
        self.run(model.real.commit())
        if not writes_anything:
            return
        for begin, end in model.cleared:
            for key in [key for key in self.committed if begin <= key < end]:
                del self.committed[key]
        for key, value in model.writes.items():
            if value is None:
                self.committed.pop(key, None)
            else:
                self.committed[key] = value
        self.history.append(model.cleared + [(key, after(key)) for key in model.writes])

    @invariant()
    def committed_state_matches(self) -> None:
        async def read_all() -> list[tuple[bytes, bytes]]:
            async with self.db.transaction() as tr:
                return await tr.get_range(b"", b"\xff\xff")

        assert self.run(read_all()) == sorted(self.committed.items())

    def teardown(self) -> None:
        for model in self.slots:
            if model is not None:
                self.run(model.real.cancel())


@pytest.mark.parametrize("examples", [200])
def test_backend_matches_the_model(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest, examples: int
) -> None:
    url = make_store_url(backend_name, tmp_path, request)
    loop = asyncio.new_event_loop()
    env = Env(clock=ManualClock(), rng=random.Random(7))
    db = loop.run_until_complete(open_database(url, env=env))
    commit_outcomes: collections.Counter[bool] = collections.Counter()
    try:
        run_state_machine_as_test(
            lambda: StoreMachine(db, loop, commit_outcomes),
            settings=settings(
                max_examples=examples,
                stateful_step_count=50,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
                derandomize=True,
            ),
        )
    finally:
        loop.run_until_complete(db.close())
        loop.close()
    # Not vacuous: the generated histories must include both clean commits and conflicts.
    assert commit_outcomes[True] >= 20, commit_outcomes
    assert commit_outcomes[False] >= 100, commit_outcomes
