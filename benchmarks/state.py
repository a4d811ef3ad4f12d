"""State store benchmarks: in-memory operations, durable acknowledged writes, notification fan-out.

Each function runs in its own subprocess (see `benchmarks._harness`) for one
implementation:

- ``pykka``: the baseline, the plainest actor that does the job: a
  `pykka.ThreadingActor` holding a dict (in-memory), committing each write
  to SQLite before replying (durable), or telling each subscriber itself
  (fan-out);
- ``thread`` / ``pooled``: troupe's `StateStore` in that execution mode.

Every in-memory run also measures a dict behind a `threading.Lock`, set from
one thread: the limit no actor can beat, reported in every column.

`run_state_benchmarks(quick=...)` runs them all in this process, for a quick look
without the harness.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pykka

from actors import (
    Actor,
    ActorSystem,
    GetEntry,
    MemoryBackend,
    SetEntry,
    SqliteBackend,
    StateStore,
    SubscribeState,
)
from benchmarks._harness import Benchmark, Metric, Target

__all__ = ["BENCHMARKS", "durable_writes", "fanout", "run_state_benchmarks", "store_ops"]

_WAIT_S = 600.0
"""Timeout of the waits that end a measurement: generous, they only guard against hangs."""

_KEYS = 1000
"""Distinct keys the operations cycle over."""


# -- the baseline actors ----------------------------------------------------------------


class PykkaDictStore(pykka.ThreadingActor):
    """A dict in a pykka actor: ``("set", k, v)`` stores, ``("get", k)`` reads."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, Any] = {}

    def on_receive(self, message: Any) -> Any:
        if message[0] == "set":
            self.data[message[1]] = message[2]
            return None
        return self.data.get(message[1])


class PykkaSqliteStore(pykka.ThreadingActor):
    """A pykka actor that commits each ``("set", k, v)`` to SQLite (WAL, FULL) before replying."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.db: sqlite3.Connection | None = None

    def on_start(self) -> None:
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")

    def on_stop(self) -> None:
        if self.db is not None:
            self.db.close()

    def on_receive(self, message: Any) -> Any:
        if self.db is None:
            msg = f"{self!r} got {message!r} before on_start opened its database"
            raise RuntimeError(msg)
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (message[1], str(message[2])))
        self.db.execute("COMMIT")
        return None


class PykkaPublisher(pykka.ThreadingActor):
    """Tells every subscriber each value it is told."""

    def __init__(self, subscribers: list[pykka.ActorRef[Any]]) -> None:
        super().__init__()
        self.subscribers = subscribers

    def on_receive(self, message: Any) -> Any:
        for subscriber in self.subscribers:
            subscriber.tell(message)
        return None


class _Counting:
    """Counts notifications; ``"count"`` answers how many."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        self.count += 1
        return None


class Counter(_Counting, Actor):
    """A troupe subscriber that counts what it is told."""


class PykkaCounter(_Counting, pykka.ThreadingActor):
    """A pykka subscriber that counts what it is told."""


# -- in-memory operations -------------------------------------------------------------------


def _dict_lock_set_per_s(ops: int) -> float:
    data: dict[str, int] = {}
    lock = threading.Lock()
    keys = [f"k{i % _KEYS}" for i in range(ops)]
    start = time.perf_counter()
    for i, key in enumerate(keys):
        with lock:
            data[key] = i
    return ops / (time.perf_counter() - start)


def store_ops(impl: str, *, ops: int, rounds: int = 3) -> dict[str, float]:
    """Set by tell (then one ask), get by ask and set by ask, through one store actor.

    Messages are built inside the timed loops, as a caller would build them.
    The median of `rounds` counts.
    """
    keys = [f"k{i % _KEYS}" for i in range(ops)]
    asks = max(1, ops // 5)
    tells, gets, sets = [], [], []
    with ActorSystem(name="bench-state") as system:
        if impl == "pykka":
            ref: Any = PykkaDictStore.start()

            def set_message(key: str, value: int) -> Any:
                return ("set", key, value)

            def get_message(key: str) -> Any:
                return ("get", key)
        else:
            ref = system.spawn(StateStore, MemoryBackend(), mode=impl)
            set_message, get_message = SetEntry, GetEntry
        try:
            ref.ask(get_message("warm-up"), timeout=_WAIT_S)
            for _ in range(rounds):
                start = time.perf_counter()
                for i, key in enumerate(keys):
                    ref.tell(set_message(key, i))
                ref.ask(get_message("k0"), timeout=_WAIT_S)  # FIFO: every set was handled before
                tells.append(ops / (time.perf_counter() - start))
                start = time.perf_counter()
                for key in keys[:asks]:
                    ref.ask(get_message(key))
                gets.append(asks / (time.perf_counter() - start))
                start = time.perf_counter()
                for i, key in enumerate(keys[:asks]):
                    ref.ask(set_message(key, i))
                sets.append(asks / (time.perf_counter() - start))
        finally:
            if impl == "pykka":
                pykka.ActorRegistry.stop_all()
    return {
        "tell_set_per_s": statistics.median(tells),
        "ask_get_per_s": statistics.median(gets),
        "ask_set_per_s": statistics.median(sets),
        "dict_lock_set_per_s": _dict_lock_set_per_s(ops),
    }


# -- durable writes ----------------------------------------------------------------------


def _acked_writes_per_s(ref: Any, make: Any, writes: int, window: int) -> float:
    """Keep `window` asks in flight; return acknowledged writes per second."""
    start = time.perf_counter()
    pending: list[Any] = []
    for i in range(writes):
        pending.append(ref.ask(make(f"k{i % _KEYS}", i), block=False))
        if len(pending) >= window:
            for future in pending:
                future.get(timeout=_WAIT_S)
            pending.clear()
    for future in pending:
        future.get(timeout=_WAIT_S)
    return writes / (time.perf_counter() - start)


def durable_writes(impl: str, *, writes: int, window: int) -> dict[str, float]:
    """Acknowledged durable writes per second, `window` asks in flight, SQLite FULL sync.

    troupe: the store with group commit, then with ``max_batch=1`` (one
    commit per write). pykka: one commit per write, in both rows. Runs of
    one commit per write make a tenth of the writes: they are that slow.
    """
    directory = Path(tempfile.mkdtemp(prefix="troupe-bench-"))
    figures: dict[str, float] = {}
    try:
        if impl == "pykka":
            ref = PykkaSqliteStore.start(directory / "pykka.db")
            try:
                rate = _acked_writes_per_s(ref, lambda k, v: ("set", k, v), max(1, writes // 10), window)
            finally:
                pykka.ActorRegistry.stop_all()
            return {"group_acks_per_s": rate, "single_acks_per_s": rate}
        with ActorSystem(name="bench-durable") as system:
            for metric, max_batch in (("group_acks_per_s", 1024), ("single_acks_per_s", 1)):
                backend = SqliteBackend(directory / f"{metric}.db")
                ref = system.spawn(StateStore, backend, max_batch=max_batch, mode=impl)
                count = writes if max_batch > 1 else max(1, writes // 10)
                figures[metric] = _acked_writes_per_s(ref, SetEntry, count, window)
                ref.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return figures


# -- fan-out -------------------------------------------------------------------------------


def fanout(impl: str, *, n: int, events: int) -> dict[str, float]:
    """Set one key `events` times with `n` subscribers; time until every one has heard all."""
    with ActorSystem(name="bench-fanout") as system:
        if impl == "pykka":
            subscribers: list[Any] = [PykkaCounter.start() for _ in range(n)]
            source: Any = PykkaPublisher.start(subscribers)

            def publish(i: int) -> None:
                source.tell(i)
        else:
            subscribers = [system.spawn(Counter, mode=impl) for _ in range(n)]
            source = system.spawn(StateStore, MemoryBackend(), mode=impl)
            for subscriber in subscribers:
                source.ask(SubscribeState("jobs:*", subscriber))

            def publish(i: int) -> None:
                source.tell(SetEntry("jobs:1", i))

        try:
            start = time.perf_counter()
            for i in range(events):
                publish(i)
            counts = [f.get(timeout=_WAIT_S) for f in [s.ask("count", block=False) for s in subscribers]]
            elapsed = time.perf_counter() - start
            # A subscriber may answer before the last notification reaches it: wait for stragglers.
            while sum(counts) < n * events:
                counts = [s.ask("count", timeout=_WAIT_S) for s in subscribers]
                elapsed = time.perf_counter() - start
        finally:
            if impl == "pykka":
                pykka.ActorRegistry.stop_all()
    return {"notifications_per_s": n * events / elapsed, "event_to_all_ms": elapsed / events * 1000}


BENCHMARKS = (
    Benchmark(
        name="store_ops",
        func=store_ops,
        metrics=(
            Metric("tell_set_per_s", "store: set by tell (ops/s)", higher_is_better=True),
            Metric("ask_get_per_s", "store: get by ask (ops/s)", higher_is_better=True),
            Metric("ask_set_per_s", "store: set by ask (ops/s)", higher_is_better=True),
            Metric("dict_lock_set_per_s", "limit: dict behind a lock, set (ops/s)", higher_is_better=True),
        ),
        params={"ops": 100_000},
        # Default: 40,000 tells (0.3 s a round at the target) and 8,000 asks; the asks of pykka and
        # thread mode (5-8k/s) took 48 of the run's 576 s at 100,000.
        default_params={"ops": 40_000},
        quick_params={"ops": 2_000, "rounds": 1},
        targets=(Target("store set by tell >= 100,000/s", "tell_set_per_s", 100_000, at_most=False, unit="/s"),),
    ),
    Benchmark(
        name="durable",
        func=durable_writes,
        metrics=(
            Metric(
                "group_acks_per_s", "SQLite acked writes/s, group commit (pykka: a commit each)", higher_is_better=True
            ),
            Metric("single_acks_per_s", "SQLite acked writes/s, a commit per write", higher_is_better=True),
        ),
        params={"writes": 40_000, "window": 500},
        quick_params={"writes": 500, "window": 100},
        targets=(
            Target(
                "durable acked writes >= 20,000/s with group commit",
                "group_acks_per_s",
                20_000,
                at_most=False,
                unit="/s",
            ),
        ),
    ),
    Benchmark(
        name="fanout",
        func=fanout,
        metrics=(
            Metric("notifications_per_s", "fan-out: notifications delivered (/s)", higher_is_better=True, plot=True),
            Metric("event_to_all_ms", "fan-out: one change to all subscribers (ms)", plot=True),
        ),
        params={"events": 50},
        quick_params={"events": 5},
        sizes=(100, 1_000),
        quick_sizes=(20,),
    ),
)
"""The state store benchmarks, in report order."""


def run_state_benchmarks(*, quick: bool) -> dict[str, dict[str, float]]:
    """Run every state benchmark in this process, for each implementation; return the figures.

    Keys are ``"<benchmark> <impl>"`` (plus ``" N=<n>"`` for sized ones).
    The harness (``python -m benchmarks --only state``) runs each case in a
    fresh process instead, which is what the reports use.
    """
    results: dict[str, dict[str, float]] = {}
    for bench in BENCHMARKS:
        params = bench.quick_params if quick else bench.params
        sizes = (bench.quick_sizes if quick else bench.sizes) or (None,)
        for n in sizes:
            for impl in bench.impls:
                kwargs = dict(params) if n is None else {**params, "n": n}
                label = f"{bench.name} {impl}" + ("" if n is None else f" N={n}")
                results[label] = dict(bench.func(impl, **kwargs))
    return results
