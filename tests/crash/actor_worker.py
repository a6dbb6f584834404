"""Child process for the actor crash tests: an actor runtime over a shared store, printing acks.

Usage:
    python actor_worker.py hammer STORAGE_URL ACKS SEED
    python actor_worker.py steps STORAGE_URL

``hammer``: a runtime with a short idle timeout sends :class:`Increment` to the :data:`KEYS`
counters until ACKS increments were acknowledged. After a burst on one counter it leaves that
counter alone for longer than the idle timeout, so the counter deactivates here and the other
process (refused with ``ActorActiveElsewhere`` meanwhile, and retrying) activates it: the counters
bounce between processes. Prints ``node NODE``, then waits for ``go`` on stdin (so that both
processes start together), then prints ``activated KEY EPOCH TOTAL`` (from ``on_activate``),
``ack KEY TOTAL`` per acknowledged increment, ``err KEY ERROR`` for any other failure, and at the
end ``refused COUNT`` (requests refused with ``ActorActiveElsewhere`` or ``Overloaded``) and ``done``.

``steps``: a runtime with the default (long) idle timeout runs :class:`RunSteps` turns on the
:data:`KEYS` steppers forever, several callers per actor; each step commits mid-turn with
``ctx.checkpoint()``. Prints ``node NODE``, ``activated KEY EPOCH STEPS``, ``step KEY N`` once
step N's checkpoint returned, ``ack KEY STEPS TURNS`` once a turn returned, ``err KEY ERROR``.
The parent kills it with SIGKILL. An actor found active on another (dead) node is retried until
this node's failure timeout declares that node dead.

Every line is flushed at once: a line is an acknowledgement the parent may count on.
"""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import dataclass
from typing import Any

from kelpie.actors import Actor, ActorContext, ActorId, ActorRuntime, handler
from kelpie.errors import ActorActiveElsewhere, KelpieError, Overloaded
from kelpie.storage import open_database

KEYS = ("a", "b", "c", "d")
NAMESPACE = "crash"
IDLE_TIMEOUT_S = 0.2
HEARTBEAT_INTERVAL_S = 0.05
FAILURE_TIMEOUT_S = 1.0  # a killed node is dead to the others after this long
HAMMER_FAILURE_TIMEOUT_S = 3.0  # nobody dies in the hammer test: never expires, even under load
BURST_ACKS = 20  # acks on one counter before resting from it
REST_S = (0.5, 0.75)  # > IDLE_TIMEOUT_S plus an idle sweep: the counter deactivates while resting
TURN_WORK_S_MAX = 0.004
ELSEWHERE_RETRY_S = 0.02
CALLERS_PER_PROCESS = 3
CALLERS_PER_STEPPER = 2
STEPS_PER_TURN = 3
STEP_FILLER = b"s" * 500
STEP_WORK_S_MAX = 0.003
DEADLINE_S = 45.0


_emitting = False  # only the child prints; the parent imports the actor classes silently


def emit(line: str) -> None:
    if _emitting:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


@dataclass(frozen=True)
class Increment:
    pass


class Counter(Actor):
    type_name = "counter"

    def initial_state(self) -> dict[str, int]:
        return {"total": 0}

    async def on_activate(self, ctx: ActorContext) -> None:
        emit(f"activated {ctx.id.key} {ctx.epoch} {ctx.state['total']}")

    @handler
    async def increment(self, ctx: ActorContext, message: Increment) -> int:
        ctx.state["total"] += 1
        await ctx.env.clock.sleep(ctx.env.rng.uniform(0, TURN_WORK_S_MAX))  # turns overlap callers
        total: int = ctx.state["total"]
        return total


@dataclass(frozen=True)
class RunSteps:
    steps: int


@dataclass(frozen=True)
class Inspect:
    pass


def step_key(number: int) -> bytes:
    return b"step/%08d" % number


class Stepper(Actor):
    """A long turn in steps: each step writes the state and two kv keys, then checkpoints."""

    type_name = "stepper"

    def initial_state(self) -> dict[str, int]:
        return {"steps": 0, "turns": 0}

    async def on_activate(self, ctx: ActorContext) -> None:
        emit(f"activated {ctx.id.key} {ctx.epoch} {ctx.state['steps']}")

    @handler
    async def run_steps(self, ctx: ActorContext, message: RunSteps) -> list[int]:
        for _ in range(message.steps):
            ctx.state["steps"] += 1
            steps = ctx.state["steps"]
            ctx.kv.set(b"steps", b"%d" % steps)
            ctx.kv.set(step_key(steps), b"%d:" % steps + STEP_FILLER)
            # A little work between the writes and the commit: the kill lands anywhere in a step.
            await ctx.env.clock.sleep(ctx.env.rng.uniform(0, STEP_WORK_S_MAX))
            await ctx.checkpoint()
            emit(f"step {ctx.id.key} {steps}")
        ctx.state["turns"] += 1
        ctx.kv.set(b"turns", b"%d" % ctx.state["turns"])
        return [ctx.state["steps"], ctx.state["turns"]]

    @handler
    async def inspect(self, ctx: ActorContext, message: Inspect) -> dict[str, Any]:
        """The committed picture as this activation sees it: state, kv counters, step keys."""
        steps = await ctx.kv.items(prefix=b"step/", limit=100_000)
        return {
            "state": dict(ctx.state),
            "steps": await ctx.kv.get(b"steps"),
            "turns": await ctx.kv.get(b"turns"),
            "step_keys": [key for key, _ in steps],
            "step_values_ok": all(value == b"%d:" % int(key[5:]) + STEP_FILLER for key, value in steps),
        }


def actor_id(type_name: str, key: str) -> ActorId:
    return ActorId.of(NAMESPACE, type_name, key)


async def hammer(url: str, acks_target: int, seed: int) -> None:
    db = await open_database(url)
    clock = db.env.clock
    rng = random.Random(seed)
    deadline_s = clock.monotonic_s() + DEADLINE_S
    resting_until_s = dict.fromkeys(KEYS, 0.0)
    burst = dict.fromkeys(KEYS, 0)
    acks = refusals = 0

    try:
        async with ActorRuntime(
            db,
            actor_types=[Counter],
            idle_timeout_s=IDLE_TIMEOUT_S,
            heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
            failure_timeout_s=HAMMER_FAILURE_TIMEOUT_S,
        ) as runtime:
            emit(f"node {runtime.node_id}")
            # Start together: the parent says "go" once both processes are up.
            go = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if go.strip() != "go":
                raise SystemExit(f"expected 'go' on stdin, got {go!r}")

            async def caller() -> None:
                nonlocal acks, refusals
                while acks < acks_target:
                    now_s = clock.monotonic_s()
                    if now_s > deadline_s:
                        emit(f"err - deadline passed with {acks} of {acks_target} acks")
                        return
                    ready = [key for key in KEYS if resting_until_s[key] <= now_s]
                    if not ready:
                        await clock.sleep(ELSEWHERE_RETRY_S)
                        continue
                    key = rng.choice(ready)
                    try:
                        total = await runtime.ref(actor_id("counter", key)).request(Increment())
                    except (ActorActiveElsewhere, Overloaded):
                        # Retry later; the owner may be in the middle of a burst on it.
                        refusals += 1
                        resting_until_s[key] = max(resting_until_s[key], now_s + ELSEWHERE_RETRY_S)
                        continue
                    except KelpieError as error:
                        emit(f"err {key} {type(error).__name__}: {error}")
                        continue
                    emit(f"ack {key} {total}")
                    acks += 1
                    burst[key] += 1
                    if burst[key] >= BURST_ACKS:
                        burst[key] = 0
                        resting_until_s[key] = clock.monotonic_s() + rng.uniform(*REST_S)

            async with asyncio.TaskGroup() as group:
                for _ in range(CALLERS_PER_PROCESS):
                    group.create_task(caller())
        emit(f"refused {refusals}")
        emit("done")
    finally:
        await db.close()


async def steps_forever(url: str) -> None:
    db = await open_database(url)
    clock = db.env.clock
    deadline_s = clock.monotonic_s() + DEADLINE_S
    try:
        async with ActorRuntime(
            db,
            actor_types=[Stepper],
            heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
            failure_timeout_s=FAILURE_TIMEOUT_S,
        ) as runtime:
            emit(f"node {runtime.node_id}")

            async def caller(key: str) -> None:
                ref = runtime.ref(actor_id("stepper", key))
                while clock.monotonic_s() < deadline_s:  # the parent kills us long before
                    try:
                        steps, turns = await ref.request(RunSteps(STEPS_PER_TURN))
                    except (ActorActiveElsewhere, Overloaded):
                        await clock.sleep(ELSEWHERE_RETRY_S)  # the previous owner is not yet dead to us
                        continue
                    except KelpieError as error:
                        emit(f"err {key} {type(error).__name__}: {error}")
                        await clock.sleep(ELSEWHERE_RETRY_S)
                        continue
                    emit(f"ack {key} {steps} {turns}")

            async with asyncio.TaskGroup() as group:
                for key in KEYS:
                    for _ in range(CALLERS_PER_STEPPER):
                        group.create_task(caller(key))
    finally:
        await db.close()


def main(arguments: list[str]) -> None:
    global _emitting
    _emitting = True
    mode, url, *rest = arguments
    if mode == "hammer":
        acks_target, seed = (int(value) for value in rest)
        asyncio.run(hammer(url, acks_target, seed))
    elif mode == "steps":
        asyncio.run(steps_forever(url))
    else:
        raise SystemExit(f"unknown mode {mode!r}; expected 'hammer' or 'steps'")


if __name__ == "__main__":
    main(sys.argv[1:])
