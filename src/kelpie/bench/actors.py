"""The actor benchmark: hot requests, activation, durable turns and the memory of idle actors.

Every measurement goes through the public runtime API (``ActorRuntime``, ``runtime.ref(...)``,
``await ref.request(...)``), so it covers what an agent pays per message: the mailbox check, the
turn, state encoding (to detect changes), the fenced commit with its output gate, and activation
(directory claim plus state load in one transaction). Each latency case warms up before it is timed.

The actor under test (:class:`BenchActor`) holds about :data:`STATE_BYTES` of msgpack-encoded state
(a dict: a turn counter, its own key, and a text payload unique to the actor). ``Ping`` changes
nothing (so its turn commits nothing); ``Write`` bumps the counter (so its turn commits the state).

Cases (``backend`` names the store; SQLite runs in a temporary directory with its default durable
settings, ``synchronous=FULL``):

- ``hot_request_sequential`` (memory): one activated actor, sequential ``Ping`` requests.
- ``hot_request_concurrent_100`` (memory): 100 caller tasks sending ``Ping`` to that one actor,
  each yielding to the event loop between requests (untimed) so that the callers interleave;
  latency per request, ``ops_per_s`` is requests over wall time. A ``Ping`` turn never suspends,
  so each request finds the actor idle and runs inline in its caller's task.
- ``hot_request_concurrent_100_queued`` (memory): the same callers sending ``PingAwaiting``, whose
  handler suspends once, so turns overlap callers: requests queue in the mailbox and the drainer
  task runs them. The latency includes the wait behind up to 99 queued requests.
- ``round_robin_10000`` (memory): 10,000 actors activated first, then sequential ``Ping`` requests
  visiting them in turn.
- ``cold_activation_sequential`` (sqlite): actors whose state is committed in SQLite but which are
  not active; the timed operation is the first ``Ping`` (activation, state load, turn).
- ``cold_activation_32_in_flight`` (sqlite): the same with 32 activations in flight at once;
  ``ops_per_s`` is activations over wall time.
- ``durable_turns_1000_actors`` (sqlite): :data:`DURABLE_CALLERS` tasks, one per actor, each
  sending ``Write`` requests, so every turn commits; ``ops_per_s`` is turns over wall time.
- ``idle_activations_per_gb`` (sqlite): activate many actors with committed state, then measure
  the process's resident memory (``VmRSS`` in ``/proc/self/status``, after ``gc.collect()``) before
  and after. ``ops_per_s`` here is *activations per GB* (10^9 bytes) of resident memory, and the
  row carries extra keys: ``bytes_per_activation`` (RSS growth / activations), ``activations``,
  ``rss_delta_bytes`` and ``activations_per_s`` (the bulk activation rate). ``p50_us``/``p99_us`` are
  the latency of one activation while :data:`IDLE_ACTIVATORS` activations are in flight. The store
  is SQLite, so the states held in the store live on disk, not in the measured memory (SQLite's
  page cache, a few MiB at most, is the only store memory that can grow).

The runtimes run with idle timeouts, heartbeats and reminder polls far longer than a run, so no
background work competes with the measurement.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import datetime
import gc
import importlib.metadata
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import uvloop

from kelpie.actors import Actor, ActorContext, ActorId, ActorRuntime, handler
from kelpie.actors.activation import write_state
from kelpie.actors.codec import encode_state
from kelpie.bench.harness import Operation, store_url, timed, warmup_count
from kelpie.bench.report import machine, summary
from kelpie.errors import InvalidArgument, shorten
from kelpie.storage import Database, open_database

__all__ = ["BenchActor", "Ping", "PingAwaiting", "Write", "run_actor_bench"]

NAMESPACE: Final = "bench"
STATE_BYTES: Final = 2_048  # the encoded state of every actor is within a few bytes of this
CONCURRENT_CALLERS: Final = 100
ROUND_ROBIN_ACTORS: Final = 10_000
COLD_IN_FLIGHT: Final = 32
DURABLE_ACTORS: Final = 1_000
DURABLE_CALLERS: Final = 1_000  # one caller per actor: turns never queue behind each other
IDLE_ACTIVATORS: Final = 256
PRELOAD_ACTORS_PER_TRANSACTION: Final = 1_000
IDLE_WARMUP_ACTIVATIONS: Final = 2_000
BYTES_PER_GB: Final = 10**9
# Far longer than any run: nothing deactivates, beats or polls while we measure.
QUIET_S: Final = 1_000_000.0

assert DURABLE_CALLERS <= DURABLE_ACTORS
assert PRELOAD_ACTORS_PER_TRANSACTION * STATE_BYTES < 8_000_000  # well under the transaction limit


@dataclass(frozen=True, kw_only=True)
class BenchSizes:
    """How many timed operations each case runs."""

    hot_requests: int
    concurrent_requests: int
    round_robin_requests: int
    cold_activations: int
    cold_activations_in_flight: int
    durable_turns: int
    idle_activations: int


QUICK_SIZES: Final = BenchSizes(
    hot_requests=5_000,
    concurrent_requests=20_000,
    round_robin_requests=20_000,
    cold_activations=300,
    cold_activations_in_flight=1_000,
    durable_turns=5_000,
    idle_activations=20_000,
)
FULL_SIZES: Final = BenchSizes(
    hot_requests=50_000,
    concurrent_requests=200_000,
    round_robin_requests=100_000,
    cold_activations=2_000,
    cold_activations_in_flight=10_000,
    durable_turns=30_000,
    idle_activations=200_000,
)


# --- the actor --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """A request whose turn reads state and writes nothing."""


@dataclass(frozen=True, slots=True)
class Write:
    """A request whose turn changes the state, so it commits."""


@dataclass(frozen=True, slots=True)
class PingAwaiting:
    """Like :class:`Ping`, but the handler suspends once (as a handler awaiting I/O would)."""


def initial_state(key: str) -> dict[str, Any]:
    """About :data:`STATE_BYTES` of state, unique to the actor ``key``."""
    state: dict[str, Any] = {"turns": 0, "key": key, "payload": ""}
    padding = STATE_BYTES - len(encode_state(state, None)) - 2  # a str of this size has a 3-byte header
    state["payload"] = (key * (padding // max(len(key), 1) + 1))[:padding]
    return state


class BenchActor(Actor):
    """The actor every case measures. See the module docstring."""

    type_name = "bench"

    def initial_state(self) -> dict[str, Any]:
        return initial_state("")

    @handler
    async def ping(self, ctx: ActorContext, message: Ping) -> int:
        turns: int = ctx.state["turns"]
        return turns

    @handler
    async def ping_awaiting(self, ctx: ActorContext, message: PingAwaiting) -> int:
        await asyncio.sleep(0)
        turns: int = ctx.state["turns"]
        return turns

    @handler
    async def write(self, ctx: ActorContext, message: Write) -> int:
        ctx.state["turns"] += 1
        turns: int = ctx.state["turns"]
        return turns


def _actor_id(group: str, index: int) -> ActorId:
    return ActorId(NAMESPACE, BenchActor.type_name, f"{group}-{index:07d}")


# --- entry point ------------------------------------------------------------------------------------


def _run(main: Coroutine[Any, Any, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run on uvloop, the loop `kelpie serve` runs on (uvicorn[standard] installs it)."""
    return uvloop.run(main)


def run_actor_bench(*, quick: bool = False) -> dict[str, Any]:
    """Run every case; return a JSON-ready report.

    Args:
        quick: run the smaller sizes (:data:`QUICK_SIZES`, under a minute) instead of
            :data:`FULL_SIZES` (a few minutes).

    Returns:
        ``{"suite": "actors", "machine": {...}, "date": ISO 8601, "results": [{"name",
        "backend", "p50_us", "p99_us", "ops_per_s"}, ...]}``; the ``idle_activations_per_gb`` row
        has extra keys (see the module docstring).

    Raises:
        InvalidArgument: ``quick`` is not a bool.
        StorageUnavailable: a store could not be opened.
    """
    if type(quick) is not bool:
        raise InvalidArgument(f"quick must be a bool, got {shorten(quick)}")
    sizes = QUICK_SIZES if quick else FULL_SIZES
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results: list[dict[str, Any]] = []
    results.extend(_run(_bench_hot("memory", "memory://", sizes)))
    for case in (_bench_cold, _bench_durable, _bench_idle_memory):
        with store_url("sqlite") as url:
            results.extend(_run(case("sqlite", url, sizes)))
        gc.collect()
    return {
        "suite": "actors",
        "machine": machine(event_loop=f"uvloop {importlib.metadata.version('uvloop')}"),
        "date": date,
        "results": results,
    }


@contextlib.asynccontextmanager
async def _runtime(db: Database) -> AsyncIterator[ActorRuntime]:
    async with ActorRuntime(
        db,
        actor_types=[BenchActor],
        idle_timeout_s=QUIET_S,
        idle_notice_s=QUIET_S,
        heartbeat_interval_s=QUIET_S,
        failure_timeout_s=3 * QUIET_S,
        reminder_poll_interval_s=QUIET_S,
    ) as runtime:
        yield runtime


async def _preload_states(db: Database, group: str, count: int) -> None:
    """Commit the state of actors ``group-0 .. group-(count-1)`` without activating them."""
    for first in range(0, count, PRELOAD_ACTORS_PER_TRANSACTION):
        async with db.transaction() as tr:
            for index in range(first, min(count, first + PRELOAD_ACTORS_PER_TRANSACTION)):
                actor_id = _actor_id(group, index)
                write_state(tr, actor_id, encode_state(initial_state(actor_id.key), None))


# --- cases ------------------------------------------------------------------------------------------


async def _concurrently(
    operation: Operation, total: int, tasks: int, *, warmup: int
) -> tuple[list[int], int]:
    """``total`` runs of ``operation`` shared by ``tasks`` tasks, after ``warmup`` runs.

    Sequence numbers are handed out in order from one counter, so each is used exactly once.
    Returns each timed run's latency and the wall time of the timed part, in ns.
    """
    latencies_ns: list[int] = []

    async def run(first: int, count: int, record: bool) -> int:
        sequences = iter(range(first, first + count))

        async def worker() -> None:
            for sequence in sequences:
                elapsed_ns = await operation(sequence)
                if record:
                    latencies_ns.append(elapsed_ns)

        started_ns = time.perf_counter_ns()
        async with asyncio.TaskGroup() as group:
            for _ in range(tasks):
                group.create_task(worker())
        return time.perf_counter_ns() - started_ns

    await run(0, warmup, record=False)
    gc.collect()
    wall_ns = await run(warmup, total, record=True)
    assert len(latencies_ns) == total, (len(latencies_ns), total)
    return latencies_ns, wall_ns


def _request(runtime: ActorRuntime, actor_ids: Sequence[ActorId], message: object) -> Operation:
    refs = [runtime.ref(actor_id) for actor_id in actor_ids]

    async def request(sequence: int) -> int:
        ref = refs[sequence % len(refs)]
        started_ns = time.perf_counter_ns()
        await ref.request(message)
        return time.perf_counter_ns() - started_ns

    return request


def _yielding(operation: Operation) -> Operation:
    """``operation``, then a yield to the event loop (untimed), so that concurrent callers take turns.

    A request whose handler never suspends completes without yielding, so without this one caller
    task would run every request before the others started.
    """

    async def yielding(sequence: int) -> int:
        elapsed_ns = await operation(sequence)
        await asyncio.sleep(0)
        return elapsed_ns

    return yielding


async def _bench_hot(backend: str, url: str, sizes: BenchSizes) -> list[dict[str, Any]]:
    db = await open_database(url)
    try:
        async with _runtime(db) as runtime:
            hot = [_actor_id("hot", 0)]
            await runtime.ref(hot[0]).request(Ping())
            ping = _request(runtime, hot, Ping())
            results = [summary("hot_request_sequential", backend, await timed(ping, sizes.hot_requests))]
            concurrent_warmup = warmup_count(sizes.concurrent_requests, CONCURRENT_CALLERS)
            latencies_ns, wall_ns = await _concurrently(
                _yielding(ping), sizes.concurrent_requests, CONCURRENT_CALLERS, warmup=concurrent_warmup
            )
            results.append(
                summary(f"hot_request_concurrent_{CONCURRENT_CALLERS}", backend, latencies_ns, wall_ns)
            )
            # The handler suspends, so callers overlap turns: requests queue in the mailbox and a
            # drainer task runs them (the path taken whenever the actor is busy).
            latencies_ns, wall_ns = await _concurrently(
                _request(runtime, hot, PingAwaiting()),
                sizes.concurrent_requests,
                CONCURRENT_CALLERS,
                warmup=concurrent_warmup,
            )
            results.append(
                summary(f"hot_request_concurrent_{CONCURRENT_CALLERS}_queued", backend, latencies_ns, wall_ns)
            )
            actor_ids = [_actor_id("round-robin", index) for index in range(ROUND_ROBIN_ACTORS)]
            for actor_id in actor_ids:
                await runtime.ref(actor_id).request(Ping())
            assert runtime.statistics().activations == ROUND_ROBIN_ACTORS + 1
            round_robin = _request(runtime, actor_ids, Ping())
            latencies_ns = await timed(round_robin, sizes.round_robin_requests, warmup=ROUND_ROBIN_ACTORS)
            results.append(summary(f"round_robin_{ROUND_ROBIN_ACTORS}", backend, latencies_ns))
        return results
    finally:
        await db.close()


async def _bench_cold(backend: str, url: str, sizes: BenchSizes) -> list[dict[str, Any]]:
    sequential_warmup = warmup_count(sizes.cold_activations)
    in_flight_warmup = warmup_count(sizes.cold_activations_in_flight, COLD_IN_FLIGHT)
    db = await open_database(url)
    try:
        await _preload_states(db, "cold", sequential_warmup + sizes.cold_activations)
        await _preload_states(db, "cold-32", in_flight_warmup + sizes.cold_activations_in_flight)
        async with _runtime(db) as runtime:
            # Each sequence number addresses an actor never activated by this runtime.
            ping = _request(
                runtime,
                [_actor_id("cold", index) for index in range(sequential_warmup + sizes.cold_activations)],
                Ping(),
            )
            latencies_ns = await timed(ping, sizes.cold_activations, warmup=sequential_warmup)
            results = [summary("cold_activation_sequential", backend, latencies_ns)]
            in_flight_ids = [
                _actor_id("cold-32", index)
                for index in range(in_flight_warmup + sizes.cold_activations_in_flight)
            ]
            ping = _request(runtime, in_flight_ids, Ping())
            latencies_ns, wall_ns = await _concurrently(
                ping, sizes.cold_activations_in_flight, COLD_IN_FLIGHT, warmup=in_flight_warmup
            )
            results.append(
                summary(f"cold_activation_{COLD_IN_FLIGHT}_in_flight", backend, latencies_ns, wall_ns)
            )
            statistics = runtime.statistics()
            assert statistics.activations == len(in_flight_ids) + sequential_warmup + sizes.cold_activations
            assert statistics.commits == 0, statistics  # a Ping turn writes nothing
        return results
    finally:
        await db.close()


async def _bench_durable(backend: str, url: str, sizes: BenchSizes) -> list[dict[str, Any]]:
    db = await open_database(url)
    try:
        async with _runtime(db) as runtime:
            actor_ids = [_actor_id("durable", index) for index in range(DURABLE_ACTORS)]
            write = _request(runtime, actor_ids, Write())
            # The worker tasks take sequence numbers in order, so with one caller per actor and
            # sequence % DURABLE_ACTORS choosing the actor, turns on one actor rarely queue.
            latencies_ns, wall_ns = await _concurrently(
                write, sizes.durable_turns, DURABLE_CALLERS, warmup=DURABLE_ACTORS
            )
            statistics = runtime.statistics()
            assert statistics.commits >= sizes.durable_turns + DURABLE_ACTORS, statistics
        return [summary(f"durable_turns_{DURABLE_ACTORS}_actors", backend, latencies_ns, wall_ns)]
    finally:
        await db.close()


def _resident_bytes() -> int:
    """This process's resident set size (``VmRSS``), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                value, unit = line.split()[1:3]
                assert unit == "kB", line
                return int(value) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def _bench_idle_memory(backend: str, url: str, sizes: BenchSizes) -> list[dict[str, Any]]:
    count = sizes.idle_activations
    db = await open_database(url)
    try:
        await _preload_states(db, "idle", IDLE_WARMUP_ACTIVATIONS + count)
        async with _runtime(db) as runtime:
            ping = _request(
                runtime,
                [_actor_id("idle", index) for index in range(IDLE_WARMUP_ACTIVATIONS + count)],
                Ping(),
            )
            # Warm up (reader connections, caches, the runtime's dict) with actors not counted.
            await _concurrently(ping, 0, IDLE_ACTIVATORS, warmup=IDLE_WARMUP_ACTIVATIONS)
            # Latencies go in a preallocated array, so recording them allocates nothing measured.
            latencies_ns = array.array("q", bytes(8 * count))
            sequences = iter(range(IDLE_WARMUP_ACTIVATIONS, IDLE_WARMUP_ACTIVATIONS + count))

            async def activator() -> None:
                for sequence in sequences:
                    latencies_ns[sequence - IDLE_WARMUP_ACTIVATIONS] = await ping(sequence)

            gc.collect()
            before_bytes = _resident_bytes()
            started_ns = time.perf_counter_ns()
            async with asyncio.TaskGroup() as group:
                for _ in range(IDLE_ACTIVATORS):
                    group.create_task(activator())
            wall_ns = time.perf_counter_ns() - started_ns
            gc.collect()
            after_bytes = _resident_bytes()
            assert runtime.statistics().activations == IDLE_WARMUP_ACTIVATIONS + count
            delta_bytes = max(after_bytes - before_bytes, 1)
            row = summary("idle_activations_per_gb", backend, list(latencies_ns))
            row["ops_per_s"] = round(BYTES_PER_GB * count / delta_bytes, 1)
            row["bytes_per_activation"] = round(delta_bytes / count, 1)
            row["activations"] = count
            row["rss_delta_bytes"] = delta_bytes
            row["activations_per_s"] = round(count * 1e9 / wall_ns, 1)
            # The store is thrown away, so skip the graceful shutdown's directory releases (one
            # durable commit per actor, run one after another: minutes for 200,000 actors). With
            # the store closed they fail at once and shutdown carries on, as when storage is gone.
            await db.close()
        return [row]
    finally:
        await db.close()


# --- statistics -------------------------------------------------------------------------------------
