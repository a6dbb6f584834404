"""Actor runtimes in separate processes over one store (SQLite file, PostgreSQL).

1. Two runtime processes hammer the same counters while the counters bounce between them (each
   process rests from a counter until it deactivates there): every acknowledged increment is in the
   final total exactly once, no two acknowledgements saw the same total (no fork), and no two
   activations shared an epoch.
2. A runtime process is killed with SIGKILL while turns that checkpoint mid-turn are in flight; a
   new runtime is refused (``ActorActiveElsewhere`` naming the dead node) until the dead node's
   heartbeat has stood still for the new runtime's failure timeout, then activates the actors with a
   newer epoch: every acknowledged step is committed, and no step is torn (the state and the
   ``ctx.kv`` keys written in the same commit agree).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kelpie.actors import ActorRef, ActorRuntime
from kelpie.errors import ActorActiveElsewhere
from kelpie.storage import open_database
from tests.conftest import fresh_postgres_url
from tests.crash.actor_worker import (
    FAILURE_TIMEOUT_S,
    HEARTBEAT_INTERVAL_S,
    KEYS,
    STEPS_PER_TURN,
    Counter,
    Inspect,
    RunSteps,
    Stepper,
    actor_id,
    step_key,
)

WORKER = Path(__file__).with_name("actor_worker.py")
REPOSITORY = str(Path(__file__).parents[2])
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPOSITORY, os.getenv("PYTHONPATH")]))}
TEST_DEADLINE_S = 50.0
ACKS_PER_PROCESS = 240
KILL_ROUNDS = 2
STEP_ACKS_PER_ACTOR_BEFORE_KILL = 12
TAKEOVER_SLACK_S = 10.0  # how long after the failure timeout a takeover may still take


@dataclass
class ChildOutput:
    """What one child printed, parsed."""

    node_id: str = ""
    acks: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    steps: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    turn_acks: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: collections.defaultdict(list))
    epochs: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: list[str] = field(default_factory=list)
    refusals: int = 0
    done: bool = False

    def take(self, line: str) -> None:
        kind, *words = line.split()
        if kind == "node":
            self.node_id = words[0]
        elif kind == "activated":
            self.epochs[words[0]].append(int(words[1]))
        elif kind == "ack" and len(words) == 2:
            self.acks[words[0]].append(int(words[1]))
        elif kind == "ack":
            self.turn_acks[words[0]].append((int(words[1]), int(words[2])))
        elif kind == "step":
            self.steps[words[0]].append(int(words[1]))
        elif kind == "refused":
            self.refusals = int(words[0])
        elif kind == "done":
            self.done = True
        else:
            self.errors.append(line)


async def start_child(*arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *arguments,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=CHILD_ENV,
    )


async def read_until_exit(child: asyncio.subprocess.Process, output: ChildOutput) -> tuple[ChildOutput, str]:
    """Parse the rest of the child's stdout until it exits; its output and its stderr."""
    assert child.stdout is not None
    assert child.stderr is not None
    stderr_task = asyncio.ensure_future(child.stderr.read())
    async for raw in child.stdout:
        output.take(raw.decode())
    await child.wait()
    return output, (await stderr_task).decode()


async def wait_until_up(child: asyncio.subprocess.Process) -> ChildOutput:
    """Read the child's first line, ``node NODE``: its runtime is running."""
    assert child.stdout is not None
    output = ChildOutput()
    output.take((await child.stdout.readline()).decode() or "exited-early")
    assert output.node_id, output.errors
    return output


# --- 1. two processes hammering the same counters ------------------------------------------------


async def hammer_from_two_processes(url: str) -> None:
    async with asyncio.timeout(TEST_DEADLINE_S):
        children = [await start_child("hammer", url, str(ACKS_PER_PROCESS), str(seed)) for seed in (1, 2)]
        try:
            started = [await wait_until_up(child) for child in children]
            for child in children:  # both are up: start them together
                assert child.stdin is not None
                child.stdin.write(b"go\n")
                await child.stdin.drain()
            results = await asyncio.gather(
                *(read_until_exit(child, output) for child, output in zip(children, started, strict=True))
            )
        finally:
            for child in children:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
    outputs = [output for output, _ in results]
    for child, (output, stderr) in zip(children, results, strict=True):
        assert child.returncode == 0, stderr
        assert output.done, stderr
        assert output.errors == [], output.errors
        assert sum(map(len, output.acks.values())) >= ACKS_PER_PROCESS

    db = await open_database(url)
    try:
        async with ActorRuntime(db, actor_types=[Counter]) as runtime:
            for key in KEYS:
                counter = actor_id("counter", key)
                owner_of_total = {
                    total: index for index, output in enumerate(outputs) for total in output.acks[key]
                }
                acked_totals = sorted(total for output in outputs for total in output.acks[key])
                state = await runtime.read_state(counter)
                final_total = 0 if state is None else state["total"]
                # Each acknowledged increment applied once, none lost, and no two acknowledgements
                # saw the same total (no fork): the acknowledged totals are exactly 1..final.
                assert acked_totals == list(range(1, final_total + 1)), (key, final_total, acked_totals)
                # Fencing: every activation took a fresh epoch, and the last one is in the directory.
                epochs = sorted(epoch for output in outputs for epoch in output.epochs[key])
                assert len(epochs) == len(set(epochs)), (key, epochs)
                entry = await runtime.directory.entry(counter)
                assert entry.node_id is None, entry  # both released it when they shut down
                assert entry.epoch == epochs[-1], (entry, epochs)
                # Not vacuous: the counter moved between the processes, both ways.
                owners = [owner_of_total[total] for total in acked_totals]
                handoffs = sum(1 for before, after in itertools.pairwise(owners) if before != after)
                assert handoffs >= 2, (key, owners)
                print(f"counter {key}: total={final_total} activations={len(epochs)} handoffs={handoffs}")
    finally:
        await db.close()
    # Not vacuous either: counters were refused while the other process held them, and retried.
    assert sum(output.refusals for output in outputs) > 0


async def test_two_processes_hammer_the_same_actors_on_sqlite(tmp_path: Path) -> None:
    await hammer_from_two_processes(f"sqlite:///{(tmp_path / 'actors.db').as_posix()}")


@pytest.mark.postgres
async def test_two_processes_hammer_the_same_actors_on_postgresql(request: pytest.FixtureRequest) -> None:
    await hammer_from_two_processes(fresh_postgres_url(request.getfixturevalue("postgres_server")))


# --- 2. SIGKILL mid-turn ------------------------------------------------------------------------


async def run_steps_and_kill(url: str, extra_lines: int) -> ChildOutput:
    """Run a stepper child until every actor has acknowledged steps and ``extra_lines`` more lines
    came, then SIGKILL it (turns are always in flight)."""
    child = await start_child("steps", url)
    assert child.stdout is not None
    assert child.stderr is not None
    output = ChildOutput()
    try:
        async for raw in child.stdout:
            output.take(raw.decode())
            if all(len(output.steps[key]) >= STEP_ACKS_PER_ACTOR_BEFORE_KILL for key in KEYS):
                if extra_lines == 0:
                    break
                extra_lines -= 1
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    stderr = (await child.stderr.read()).decode()
    assert child.returncode == -signal.SIGKILL, (child.returncode, stderr)
    assert output.errors == [], (output.errors, stderr)
    assert all(len(output.steps[key]) >= STEP_ACKS_PER_ACTOR_BEFORE_KILL for key in KEYS), stderr
    return output


async def request_after_failover(
    runtime: ActorRuntime, stepper: ActorRef, message: object
) -> tuple[Any, list[ActorActiveElsewhere]]:
    """``stepper.request(message)``, retried while the actor is active on a node not yet dead to
    ``runtime``; the reply and the refusals. Bounded by the caller's timeout: the liveness
    mechanism is what this waits on, polled with the runtime's own clock."""
    refusals: list[ActorActiveElsewhere] = []
    while True:
        try:
            return await stepper.request(message), refusals
        except ActorActiveElsewhere as error:
            refusals.append(error)
        await runtime.env.clock.sleep(HEARTBEAT_INTERVAL_S)


async def kill_mid_turn_and_take_over(url: str, seed: int) -> None:
    rng = random.Random(seed)
    print(f"actor crash test seed={seed}")
    async with asyncio.timeout(TEST_DEADLINE_S):
        # Each later child takes the actors over from the killed one before it acknowledges anything.
        outputs = [await run_steps_and_kill(url, extra_lines=rng.randint(0, 24)) for _ in range(KILL_ROUNDS)]
        dead_node = outputs[-1].node_id
        assert dead_node
        assert dead_node != outputs[0].node_id

        db = await open_database(url)
        try:
            async with ActorRuntime(
                db,
                actor_types=[Stepper],
                heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
                failure_timeout_s=FAILURE_TIMEOUT_S,
            ) as runtime:
                clock = runtime.env.clock
                started_s = clock.monotonic_s()
                inspections: dict[str, dict[str, Any]] = {}
                for key in KEYS:
                    stepper = runtime.ref(actor_id("stepper", key))
                    inspections[key], refusals = await request_after_failover(runtime, stepper, Inspect())
                    waited_s = clock.monotonic_s() - started_s
                    assert {error.node_id for error in refusals} <= {dead_node}, refusals
                    if key == KEYS[0]:
                        # The dead node counted as alive until its heartbeat had stood still for the
                        # failure timeout on this observer's clock; then it was promptly dead.
                        assert refusals
                        assert FAILURE_TIMEOUT_S <= waited_s <= FAILURE_TIMEOUT_S + TAKEOVER_SLACK_S
                    check_committed(key, inspections[key], outputs)
                    print(f"stepper {key}: refusals={len(refusals)} state={inspections[key]['state']}")
                    entry = await runtime.directory.entry(actor_id("stepper", key))
                    assert entry.node_id == runtime.node_id
                    assert entry.epoch > max(epoch for output in outputs for epoch in output.epochs[key])
                    # The fresh activation serves: one more turn on top of the committed state.
                    state = inspections[key]["state"]
                    reply = await stepper.request(RunSteps(STEPS_PER_TURN))
                    assert reply == [state["steps"] + STEPS_PER_TURN, state["turns"] + 1]
            async with ActorRuntime(db, actor_types=[Stepper]) as reader:
                for key in KEYS:
                    state = inspections[key]["state"]
                    assert await reader.read_state(actor_id("stepper", key)) == {
                        "steps": state["steps"] + STEPS_PER_TURN,
                        "turns": state["turns"] + 1,
                    }
        finally:
            await db.close()


def check_committed(key: str, inspection: dict[str, Any], outputs: list[ChildOutput]) -> None:
    state = inspection["state"]
    assert isinstance(state, dict)
    steps, turns = state["steps"], state["turns"]
    # Nothing acknowledged is lost.
    acked_steps = [number for output in outputs for number in output.steps[key]]
    acked_turns = [pair for output in outputs for pair in output.turn_acks[key]]
    assert steps >= max(acked_steps), (key, steps, max(acked_steps))
    assert turns >= max((turns for _, turns in acked_turns), default=0), (key, turns, acked_turns)
    # Acknowledged steps are distinct: no step committed twice under two activations.
    assert len(acked_steps) == len(set(acked_steps)), (key, sorted(acked_steps))
    # No torn step: the state and the kv keys of each commit agree, and the step keys are exactly
    # 1..steps, each with its own value.
    assert inspection["steps"] == (b"%d" % steps if steps else None), (key, inspection["steps"], steps)
    assert inspection["turns"] == (b"%d" % turns if turns else None), (key, inspection["turns"], turns)
    assert inspection["step_keys"] == [step_key(number) for number in range(1, steps + 1)], key
    assert inspection["step_values_ok"] is True, key
    # Whole turns plus at most one partly done turn per kill.
    assert 0 <= steps - STEPS_PER_TURN * turns <= STEPS_PER_TURN * KILL_ROUNDS, (key, steps, turns)
    # Each takeover went on from the committed state: a later activation has a newer epoch and
    # acknowledges only steps after every step acknowledged before the kill.
    for before, after in itertools.pairwise(outputs):
        assert max(before.epochs[key]) < min(after.epochs[key]), (key, before.epochs, after.epochs)
        assert max(before.steps[key]) < min(after.steps[key]), key


async def test_sigkill_mid_turn_then_takeover_on_sqlite(tmp_path: Path) -> None:
    await kill_mid_turn_and_take_over(f"sqlite:///{(tmp_path / 'actors.db').as_posix()}", seed=21)


@pytest.mark.postgres
async def test_sigkill_mid_turn_then_takeover_on_postgresql(request: pytest.FixtureRequest) -> None:
    await kill_mid_turn_and_take_over(fresh_postgres_url(request.getfixturevalue("postgres_server")), seed=22)
