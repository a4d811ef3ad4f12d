"""Chaos: crashes, give-ups and shutdowns under load, and the count that must come out even.

Nothing is lost: every ask resolves (a result, the error, or `ActorDeadError`)
and every tell is handled, refused to its sender, or a dead letter, whatever
stops or fails. Each scenario here sends numbered tasks from several threads,
lets things break, and then counts: ``resolved asks + handled tells + dead
letters + refused tells == sent``, and ``lost`` is what is left over.

- `crashes_behind`: tasks through a `Pool` (or a `Router` over supervised
  workers), a seeded fraction of which crash their routee; the supervisor
  restarts it until its restart intensity is spent and it gives up (the pool
  fails with what it holds, or the root stops the workers one by one).
- `shutdown_under_load`: 8 threads tell and ask plain actors, a router and a
  pool (management asks included) while the system shuts down; repeated.
- `router_stop_with_management_asks`: threads ask a router and a pool for
  their routees, statistics, to add and remove routees, while the router is
  stopped (``stop()``, its parent stopping, a shutdown); repeated.
- `state_storm`: 8 writers pipeline `SetEntry` asks into a `StateStore` on a
  `SqliteBackend` while the system shuts down; every acknowledged write must
  be in the database when it is opened again.
- `kill9_storm`: the same storm in a child process, killed with ``kill -9``
  after a seeded number of acknowledgements, again and again on one database.

``python -m benchmarks --only chaos --full`` runs the long version (without
``--full``, a fifth of it) and prints the
figures as a table (one column per mode); tests/test_chaos.py runs the same
scenarios, smaller, and asserts ``lost == 0``. Every random choice comes from
a seeded `random.Random`; nothing sleeps.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pykka import Timeout

from actors import (
    Actor,
    ActorSystem,
    AddRoutee,
    AwaitStarted,
    ChildSpec,
    DeadLetter,
    Decider,
    GetRoutees,
    GetStatistics,
    Pool,
    PoolConfig,
    RemoveRoutee,
    Router,
    SetEntry,
    SqliteBackend,
    StateStore,
    SupervisionPolicy,
)
from benchmarks._harness import Benchmark, Metric, Target

__all__ = [
    "BENCHMARKS",
    "Ledger",
    "chaos",
    "crashes_behind",
    "kill9_storm",
    "router_stop_with_management_asks",
    "shutdown_under_load",
    "state_storm",
]

ASK_SHARE = 0.5
"""The share of tasks sent as asks (the rest are tells)."""
MANAGE_SHARE = 0.05
"""The share of messages to a router or pool that are management asks (`shutdown_under_load`)."""

WAIT_S = 30.0
"""A hang guard for every wait: how long the asks of one scenario have, together, to resolve."""


class TaskCrashError(Exception):
    """What a task marked to crash raises in its routee."""


@dataclass(frozen=True, slots=True)
class Task:
    """A numbered unit of work; `crash` makes its handler raise."""

    id: int
    ask: bool
    crash: bool = False


@dataclass
class Ledger:
    """Where every sent task ends up. Lists only get appended to (atomic under the GIL), from any thread."""

    sent_tells: list[int] = field(default_factory=list)
    handled: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    asks: list[Any] = field(default_factory=list)
    crashes: list[int] = field(default_factory=list)
    resolved: int = 0
    unresolved: int = 0

    def dead_letter(self, letter: DeadLetter) -> None:
        """A dead-letter subscriber: note the tell tasks (a router's wrapper holds its task in ``message``)."""
        message = letter.message
        for candidate in (message, getattr(message, "message", None)):
            if candidate.__class__ is Task and not candidate.ask:
                self.dead.append(candidate.id)

    def tell(self, ref: Any, task: Task) -> None:
        self.sent_tells.append(task.id)
        try:
            ref.tell(task)
        except Exception:  # noqa: BLE001 - refused at once (stopped, no routee, exhausted): the sender knows
            self.refused.append(task.id)

    def ask(self, ref: Any, message: Any) -> None:
        try:
            self.asks.append(ref.ask(message, block=False))
        except Exception:  # noqa: BLE001 - refused at once: resolved, with the error
            self.resolved += 1

    def settle_asks(self, deadline_s: float = WAIT_S) -> None:
        """Wait for every ask (one deadline for all); count those that resolved and those that did not."""
        deadline = time.monotonic() + deadline_s
        for future in self.asks:
            try:
                future.get(timeout=max(0.001, deadline - time.monotonic()))
            except Timeout:
                self.unresolved += 1
            except Exception:  # noqa: BLE001 - an error is an answer
                self.resolved += 1
            else:
                self.resolved += 1
        self.asks.clear()

    @property
    def lost_tells(self) -> int:
        """Tells neither handled, nor refused, nor dead letters (call after shutdown)."""
        return len(set(self.sent_tells) - set(self.handled) - set(self.dead) - set(self.refused))

    @property
    def twice(self) -> int:
        """Tells handled twice, or both handled and dead-lettered (must be 0)."""
        return len(self.handled) - len(set(self.handled)) + len(set(self.handled) & set(self.dead))

    @property
    def lost(self) -> int:
        """Asks that never resolved plus tells unaccounted for."""
        return self.unresolved + self.lost_tells

    @property
    def sent(self) -> int:
        return self.resolved + self.unresolved + len(self.sent_tells)


class ChaosWorker(Actor):
    """Handles a `Task`: logs a tell, answers an ask with its id; a crashing one raises `TaskCrashError` first."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def on_receive(self, message: Any) -> Any:
        if message.__class__ is Task:
            if message.crash:
                self.ledger.crashes.append(message.id)
                msg = f"task {message.id} crashes its routee"
                raise TaskCrashError(msg)
            if not message.ask:
                self.ledger.handled.append(message.id)
            return message.id
        return message


def _system(name: str, **kwargs: Any) -> ActorSystem:
    return ActorSystem(name, dispatchers=4, dead_letters_kept=16, **kwargs)


def _send_tasks(ledger: Ledger, ref: Any, ids: range, rng: random.Random, crash_rate: float) -> None:
    for i in ids:
        task = Task(i, ask=rng.random() < ASK_SHARE, crash=rng.random() < crash_rate)
        if task.ask:
            ledger.ask(ref, task)
        else:
            ledger.tell(ref, task)


@contextmanager
def _threads(target: Callable[[int], None], count: int, name: str) -> Iterator[None]:
    """Run `target(i)` on `count` threads named ``chaos-<name>-<i>`` while the block runs; join them after."""
    workers = [threading.Thread(target=target, args=(i,), name=f"chaos-{name}-{i}") for i in range(count)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.join()


def crashes_behind(kind: str, mode: str, *, tasks: int, crash_rate: float, seed: int, senders: int = 4) -> Ledger:
    """Send `tasks` tasks through a pool (`kind` "pool") or a router over supervised workers ("router").

    The supervisor allows a third of the expected crashes, so it gives up
    part-way: the pool fails with its queue full, or the root stops the
    workers one by one until the router has none left.
    """
    ledger = Ledger()
    expected = max(1, int(tasks * crash_rate))
    policy = SupervisionPolicy(
        max_restarts=max(1, expected // 3), within_seconds=3600.0, decider=Decider(ask_failures=(TaskCrashError,))
    )
    root_policy = policy if kind == "router" else SupervisionPolicy()
    with _system(f"chaos-{kind}", root_policy=root_policy) as system:
        system.dead_letters.subscribe(ledger.dead_letter)
        if kind == "pool":
            config = PoolConfig(
                min_size=2, max_size=4, max_concurrent=4, overflow="queue", queue_capacity=tasks, supervision=policy
            )
            ref: Any = system.spawn(Pool, ChildSpec(ChaosWorker, args=(ledger,), mode=mode), config=config, mode=mode)
            ref.ask(AwaitStarted(), timeout=WAIT_S)
        else:
            workers = [system.spawn(ChaosWorker, ledger, mode=mode, restart="permanent") for _ in range(4)]
            ref = system.spawn(Router, workers, mode=mode)
        per_sender = tasks // senders

        def send(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            _send_tasks(ledger, ref, range(index * per_sender, (index + 1) * per_sender), rng, crash_rate)

        with _threads(send, senders, "sender"):
            pass
        ledger.settle_asks()
    return ledger


def shutdown_under_load(mode: str, *, rounds: int, per_thread: int, seed: int, threads: int = 8) -> Ledger:
    """`rounds` times: 8 threads tell and ask 2 actors, a router and a pool while the system shuts down."""
    ledger = Ledger()
    rng = random.Random(seed)
    ids = itertools.count()
    for round_ in range(rounds):
        _shutdown_round(
            ledger, mode, ids, round_, rng.randrange(1, per_thread * threads // 2), per_thread, threads, seed
        )
    return ledger


def _shutdown_round(  # noqa: PLR0917 - one round's parameters, positional inside this module
    ledger: Ledger, mode: str, ids: Any, round_: int, threshold: int, per_thread: int, threads: int, seed: int
) -> None:
    system = _system(f"chaos-shutdown-{round_}")
    system.dead_letters.subscribe(ledger.dead_letter)
    plain = [system.spawn(ChaosWorker, ledger, mode=mode) for _ in range(2)]
    routees = [system.spawn(ChaosWorker, ledger, mode=mode) for _ in range(2)]
    router = system.spawn(Router, routees, mode=mode)
    config = PoolConfig(min_size=2, max_size=2, max_concurrent=8, overflow="queue", queue_capacity=10**6)
    pool = system.spawn(Pool, ChildSpec(ChaosWorker, args=(ledger,), mode=mode), config=config, mode=mode)
    targets = [*plain, router, pool]
    # Shut down once a seeded share of the messages has gone out.
    sent = itertools.count(1)
    reached = threading.Event()

    def send(index: int) -> None:
        local = random.Random(seed * 7919 + round_ * 31 + index)
        for _ in range(per_thread):
            target = local.choice(targets)
            roll = local.random()
            if roll < MANAGE_SHARE and target in (router, pool):
                ledger.ask(target, GetStatistics() if roll < MANAGE_SHARE / 2 else GetRoutees())
            else:
                task = Task(next(ids), ask=roll < ASK_SHARE)
                (ledger.ask if task.ask else ledger.tell)(target, task)
            if next(sent) == threshold:
                reached.set()

    with _threads(send, threads, "sender"):
        reached.wait(WAIT_S)
        system.shutdown(timeout=WAIT_S)
    ledger.settle_asks()


class Parent(Actor):
    """Spawns a router (or a pool) as its child, so that stopping it stops the router."""

    def on_receive(self, message: Any) -> Any:
        cls, args, kwargs = message
        return self.spawn(cls, *args, **kwargs)


def router_stop_with_management_asks(mode: str, *, rounds: int, per_thread: int, seed: int, threads: int = 4) -> Ledger:
    """`rounds` times: threads send management asks to a router and a pool while they are stopped.

    The rounds take turns at how: ``stop()``, their parent stopping, a shutdown.
    """
    ledger = Ledger()
    rng = random.Random(seed)
    endings = ("stop", "parent", "shutdown")
    for round_ in range(rounds):
        threshold = rng.randrange(1, per_thread * threads)
        _manage_round(ledger, mode, endings[round_ % len(endings)], round_, threshold, per_thread, threads, seed)
    return ledger


def _manage_round(  # noqa: PLR0917
    ledger: Ledger, mode: str, ending: str, round_: int, threshold: int, per_thread: int, threads: int, seed: int
) -> None:
    system = _system(f"chaos-manage-{round_}")
    system.dead_letters.subscribe(ledger.dead_letter)
    routees = [system.spawn(ChaosWorker, ledger, mode=mode) for _ in range(3)]
    parent = system.spawn(Parent, mode=mode)
    router = parent.ask((Router, (routees[:1],), {"mode": mode}), timeout=WAIT_S)
    pool = parent.ask((Pool, (ChildSpec(ChaosWorker, args=(ledger,), mode=mode),), {"mode": mode}), timeout=WAIT_S)
    sent = itertools.count(1)
    reached = threading.Event()

    def send(index: int) -> None:
        local = random.Random(seed * 104729 + round_ * 31 + index)
        for _ in range(per_thread):
            worker = local.choice(routees)
            if local.random() < ASK_SHARE:  # half to the router, half to the pool
                message = local.choice([GetRoutees(), GetStatistics(), AddRoutee(worker), RemoveRoutee(worker)])
                ledger.ask(router, message)
            else:
                ledger.ask(pool, local.choice([GetRoutees(), GetStatistics(), AwaitStarted()]))
            if next(sent) == threshold:
                reached.set()

    with _threads(send, threads, "manager"):
        reached.wait(WAIT_S)
        if ending == "stop":
            router.stop(block=False)
            pool.stop(block=False)
        elif ending == "parent":
            parent.stop(block=False)
        else:
            system.shutdown(timeout=WAIT_S)
    ledger.settle_asks()
    system.shutdown(timeout=WAIT_S)


@dataclass
class StormResult:
    """What a `state_storm` acknowledged, and what the database holds after it."""

    acknowledged: int = 0
    kills: int = 0
    refused: int = 0
    unresolved: int = 0
    missing: int = 0


def state_storm(mode: str, *, rounds: int, per_writer: int, seed: int, writers: int = 8) -> StormResult:
    """`rounds` times: 8 writers pipeline writes into a `StateStore` on SQLite while the system shuts down.

    Every write whose ask was answered (acknowledged: committed) must be in
    the database when it is opened again, at its version or a later one.
    """
    result = StormResult()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="troupe-chaos-") as tmp:
        for round_ in range(rounds):
            threshold = rng.randrange(1, per_writer * writers)
            _storm_round(result, mode, Path(tmp) / f"state-{round_}.db", round_, threshold, per_writer, writers)
    return result


def _storm_round(  # noqa: PLR0917
    result: StormResult, mode: str, path: Path, round_: int, threshold: int, per_writer: int, writers: int
) -> None:
    system = _system(f"chaos-state-{round_}")
    store = system.spawn(StateStore, SqliteBackend(path, synchronous="NORMAL"), mode=mode)
    sent = itertools.count(1)
    reached = threading.Event()
    pending: list[list[tuple[str, Any]]] = [[] for _ in range(writers)]

    def write(index: int) -> None:
        for i in range(per_writer):
            key = f"w{index}:k{i % 50}"
            try:
                pending[index].append((key, store.ask(SetEntry(key, i), block=False)))
            except Exception:  # noqa: BLE001 - refused at once: nothing was acknowledged
                result.refused += 1
            if next(sent) == threshold:
                reached.set()

    with _threads(write, writers, "writer"):
        reached.wait(WAIT_S)
        system.shutdown(timeout=WAIT_S)
    acknowledged: dict[str, int] = {}
    deadline = time.monotonic() + WAIT_S
    for writes in pending:
        for key, future in writes:
            try:
                answer = future.get(timeout=max(0.001, deadline - time.monotonic()))
            except Timeout:
                result.unresolved += 1
                continue
            except Exception:  # noqa: BLE001 - refused (the store stopped first): not acknowledged
                result.refused += 1
                continue
            result.acknowledged += 1
            acknowledged[key] = max(acknowledged.get(key, 0), answer.version)
    backend = SqliteBackend(path)
    try:
        stored = {record.key: record.version for record in backend.open()}
    finally:
        backend.close()
    result.missing += sum(1 for key, version in acknowledged.items() if stored.get(key, 0) < version)


_WRITER = """
import sys, threading
from actors import ActorSystem, SetEntry, SqliteBackend, StateStore
path, mode, writers = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = threading.Lock()
system = ActorSystem("kill9", dispatchers=4)
store = system.spawn(StateStore, SqliteBackend(path, synchronous="NORMAL"), mode=mode)
def write(w):
    i = 0
    while True:
        batch = [(f"w{w}:k{(i + j) % 50}", i + j) for j in range(16)]
        futures = [(key, store.ask(SetEntry(key, value), block=False)) for key, value in batch]
        for key, future in futures:
            answer = future.get(timeout=60)
            with lock:  # a line is printed only once its write is acknowledged (committed)
                sys.stdout.write(f"{key} {answer.version}\\n")
                sys.stdout.flush()
        i += 16
for w in range(writers):
    threading.Thread(target=write, args=(w,), daemon=True).start()
threading.Event().wait()
"""


def kill9_storm(mode: str, *, kills: int, acks: int, seed: int, writers: int = 8) -> StormResult:
    """`kills` times: a child process storms a `StateStore` on one SQLite file with 8 writers; kill -9 it.

    Each child is killed after a seeded number (up to `acks`) of
    acknowledgements; every acknowledged write must be in the database when
    it is opened again, at its version or a later one.
    """
    result = StormResult()
    rng = random.Random(seed)
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="troupe-kill9-") as tmp:
        path = Path(tmp) / "storm.db"
        acknowledged: dict[str, int] = {}
        for _ in range(kills):
            target = rng.randrange(acks // 2, acks + 1)
            command = [sys.executable, "-c", _WRITER, str(path), mode, str(writers)]
            child = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
            lines: list[str] = []
            try:
                if child.stdout is None:
                    msg = "the writer's stdout is not a pipe"
                    raise RuntimeError(msg)
                while len(lines) < target:
                    line = child.stdout.readline()
                    if not line:
                        msg = f"the kill -9 writer stopped early (exit {child.poll()})"
                        raise RuntimeError(msg)
                    lines.append(line)
                os.kill(child.pid, signal.SIGKILL)
                lines.extend(child.stdout.read().splitlines(keepends=True))  # acks printed before it died
            finally:
                child.kill()
                child.wait(timeout=WAIT_S)
                if child.stdout is not None:
                    child.stdout.close()
            result.kills += 1
            for line in lines:
                if not line.endswith("\n"):
                    continue  # cut off by the kill: never fully acknowledged
                key, version = line.split()
                result.acknowledged += 1
                acknowledged[key] = max(acknowledged.get(key, 0), int(version))
        backend = SqliteBackend(path)
        try:
            stored = {record.key: record.version for record in backend.open()}
        finally:
            backend.close()
        result.missing += sum(1 for key, version in acknowledged.items() if stored.get(key, 0) < version)
    return result


def chaos(
    impl: str, *, tasks: int, crash_rate: float, rounds: int, per_thread: int, kills: int, acks: int, seed: int = 11
) -> dict[str, float]:
    """Every scenario in mode `impl`; the figures of the table (tasks, crashes, acknowledged writes, lost)."""
    start = time.perf_counter()
    pool = crashes_behind("pool", impl, tasks=tasks, crash_rate=crash_rate, seed=seed)
    router = crashes_behind("router", impl, tasks=tasks, crash_rate=crash_rate, seed=seed + 1)
    shutdown = shutdown_under_load(impl, rounds=rounds, per_thread=per_thread, seed=seed + 2)
    manage = router_stop_with_management_asks(impl, rounds=rounds, per_thread=per_thread // 4, seed=seed + 3)
    storm = state_storm(impl, rounds=rounds, per_writer=per_thread, seed=seed + 4)
    killed = kill9_storm(impl, kills=kills, acks=acks, seed=seed + 5)
    ledgers = (pool, router, shutdown, manage)
    return {
        "tasks": float(sum(ledger.sent for ledger in ledgers)),
        "crashes": float(len(pool.crashes) + len(router.crashes)),
        "dead_letters": float(sum(len(ledger.dead) for ledger in ledgers)),
        "acknowledged_writes": float(storm.acknowledged + killed.acknowledged),
        "kills": float(killed.kills),
        "lost": float(
            sum(ledger.lost + ledger.twice for ledger in ledgers) + storm.unresolved + storm.missing + killed.missing
        ),
        "seconds": time.perf_counter() - start,
    }


BENCHMARKS = (
    Benchmark(
        name="chaos",
        func=chaos,
        metrics=(
            Metric(
                "tasks",
                "tasks sent (asks, tells, management asks)",
                higher_is_better=True,
                better="more",
                worse="fewer",
            ),
            Metric("crashes", "routee crashes under supervision", higher_is_better=True, better="more", worse="fewer"),
            Metric("dead_letters", "tells that became dead letters", better="fewer", worse="more"),
            Metric(
                "acknowledged_writes",
                "acknowledged StateStore writes (SqliteBackend)",
                higher_is_better=True,
                better="more",
                worse="fewer",
            ),
            Metric(
                "lost",
                "lost: asks unresolved + tells unaccounted + acked writes missing (must be 0)",
                better="fewer",
                worse="more",
            ),
            Metric(
                "kills",
                "kill -9s of the StateStore writer process",
                higher_is_better=True,
                better="more",
                worse="fewer",
            ),
            Metric("seconds", "wall time of the scenarios (s)"),
        ),
        params={"tasks": 100_000, "crash_rate": 0.01, "rounds": 10, "per_thread": 5_000, "kills": 20, "acks": 10_000},
        quick_params={"tasks": 4_000, "crash_rate": 0.01, "rounds": 2, "per_thread": 400, "kills": 1, "acks": 500},
        # A fifth of the long version: every scenario still runs, in each mode, within the default run's minutes.
        default_params={
            "tasks": 20_000,
            "crash_rate": 0.01,
            "rounds": 2,
            "per_thread": 1_000,
            "kills": 4,
            "acks": 2_000,
        },
        targets=tuple(
            Target(f"chaos, {mode}: nothing lost", "lost", 0.0, impl=mode) for mode in ("thread", "pooled", "asyncio")
        ),
        impls=("thread", "pooled", "asyncio"),
        only_placements=("unpinned",),
        timeout_s=600.0,
        budget_s=600.0,
    ),
)
"""The chaos benchmark: one case per mode."""
