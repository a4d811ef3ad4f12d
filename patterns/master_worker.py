"""Master-worker: hand each worker its share, collect the results by worker, re-raise every failure.

    results = master_worker({"insights": hunter, "charts": visualizer},
                            work={"insights": {"path": p}, "charts": {"path": p}}).get(timeout=60)
    results = master_worker(workers, items=rows, splitter=chunks).get()   # split the items over the workers

The master is the caller: it asks every worker at once (``ask(block=False)``)
and the returned `Future` settles when every share has ended. Results are a
dict keyed like the workers. If any share failed, the future holds an
`ExceptionGroup` of every failure (each with a note naming its worker):
none is swallowed, and the results that did arrive are on the group as
``.results``.

A worker that has stopped (its ask ends with `ActorDeadError`) has its share
redistributed, once, to a live worker that has not failed (``redistribute``),
the way Akka's work pulling hands a dead worker's unconfirmed work to the
others; its result is still keyed by the worker it was meant for.

A `timeout` (seconds of the workers' system clock, so a `ManualClock`
drives it) ends the wait: each share still out fails with `TaskTimeoutError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pykka import ActorDeadError

from actors import ActorRef, CoordinationInputError, Future, TaskTimeoutError

__all__ = ["master_worker", "round_robin_split"]

K = TypeVar("K", bound=Hashable)


def round_robin_split(items: Sequence[Any], n: int) -> list[list[Any]]:
    """Split `items` into `n` lists, item i going to list ``i % n`` (the default splitter)."""
    chunks: list[list[Any]] = [[] for _ in range(n)]
    for i, item in enumerate(items):
        chunks[i % n].append(item)
    return chunks


def master_worker(
    workers: Mapping[K, ActorRef[Any]],
    work: Mapping[K, Any] | None = None,
    *,
    items: Iterable[Any] | None = None,
    splitter: Callable[[Sequence[Any], int], Sequence[Any]] = round_robin_split,
    timeout: float | None = None,
    redistribute: bool = True,
) -> Future[dict[K, Any]]:
    """Ask each worker its share; return a future of the results by worker (see the module docs).

    Args:
        workers: worker key -> actor ref.
        work: the distribution map: worker key -> the message for that worker.
        items: instead of `work`, items to split over the workers with `splitter`.
        splitter: ``splitter(items, len(workers))`` returns one share per
            worker, in the order of `workers` (default `round_robin_split`);
            each worker is asked its share as a list.
        timeout: seconds to wait for every share.
        redistribute: give a stopped worker's share to another worker.

    Raises:
        CoordinationInputError: no workers, both or neither of `work` and
            `items`, a share for an unknown worker, a splitter returning the
            wrong number of shares, a timeout <= 0.
    """
    if not workers:
        msg = "master_worker needs at least one worker; got none"
        raise CoordinationInputError(msg)
    if (work is None) == (items is None):
        msg = "master_worker takes a distribution map (work=...) or items to split (items=...), exactly one"
        raise CoordinationInputError(msg)
    if timeout is not None and not timeout > 0:
        msg = f"master_worker timeout must be > 0 seconds or None, got {timeout!r}"
        raise CoordinationInputError(msg)
    if work is not None:
        distribution = dict(work)
    else:
        shares = list(splitter(list(items or ()), len(workers)))
        if len(shares) != len(workers):
            msg = f"master_worker's splitter returned {len(shares)} shares for {len(workers)} workers"
            raise CoordinationInputError(msg)
        distribution = dict(zip(workers, shares, strict=True))
    unknown = [k for k in distribution if k not in workers]
    if unknown:
        msg = f"master_worker: work for unknown worker(s) {unknown}; workers are {list(workers)}"
        raise CoordinationInputError(msg)
    return _Master(dict(workers), distribution, timeout, redistribute=redistribute).start()


class _Master:
    """The state of one distribution; callbacks from the workers' threads update it under `_lock`."""

    def __init__(
        self, workers: dict[Any, ActorRef[Any]], work: dict[Any, Any], timeout: float | None, *, redistribute: bool
    ) -> None:
        self.workers = workers
        self.work = work
        self.timeout = timeout
        self.redistribute = redistribute
        self.future: Future[dict[Any, Any]] = Future()
        self._lock = threading.Lock()
        # Invariant: keys of the shares not yet ended; the future settles when it empties.
        self._pending = set(work)
        self._results: dict[Any, Any] = {}
        self._errors: dict[Any, Exception] = {}
        self._dead: set[Any] = set()
        self._timer: Callable[[], None] | None = None

    def start(self) -> Future[dict[Any, Any]]:
        if not self.work:
            self.future.set({})
            return self.future
        if self.timeout is not None:
            system = next(iter(self.workers.values())).actor_system
            self._timer = system.call_later(self.timeout, self._expire)
        for key, message in self.work.items():
            self._ask(key, self.workers[key], message)
        return self.future

    def _ask(self, key: Any, worker: ActorRef[Any], message: Any) -> None:
        future = worker.ask(message, block=False)
        future.add_done_callback(lambda f: self._ended(key, worker, f))

    def _ended(self, key: Any, worker: ActorRef[Any], future: Any) -> None:
        try:
            value = future.get()
        except ActorDeadError as exc:
            if self._reassign(key, worker):
                return
            self._record(key, None, exc)
        except Exception as exc:  # noqa: BLE001 - every failure is re-raised in the group
            self._record(key, None, exc)
        else:
            self._record(key, value, None)

    def _reassign(self, key: Any, worker: ActorRef[Any]) -> bool:
        with self._lock:
            self._dead.add(worker)
            if not self.redistribute or key not in self._pending:
                return False
            spare = [
                w for k, w in self.workers.items() if w not in self._dead and k not in self._errors and w.is_alive()
            ]
            if not spare:
                return False
        # One redistribution per share: a second death of its substitute is a failure.
        substitute = spare[hash(key) % len(spare)]
        future = substitute.ask(self.work[key], block=False)
        future.add_done_callback(lambda f: self._ended_again(key, f))
        return True

    def _ended_again(self, key: Any, future: Any) -> None:
        try:
            self._record(key, future.get(), None)
        except Exception as exc:  # noqa: BLE001 - every failure is re-raised in the group
            self._record(key, None, exc)

    def _record(self, key: Any, value: Any, error: Exception | None) -> None:
        with self._lock:
            if key not in self._pending:
                return  # timed out already
            self._pending.discard(key)
            if error is None:
                self._results[key] = value
            else:
                error.add_note(f"from master_worker's worker {key!r} ({self.workers[key]})")
                self._errors[key] = error
            done = not self._pending
        if done:
            self._settle()

    def _expire(self) -> None:  # on the timer thread (or in ManualClock.advance)
        with self._lock:
            late = list(self._pending)
            for key in late:
                msg = f"worker {key!r} ({self.workers[key]}) did not reply within {self.timeout} s"
                self._errors[key] = TaskTimeoutError(msg)
            self._pending.clear()
        if late:
            self._settle()

    def _settle(self) -> None:
        if self._timer is not None:
            self._timer()
        if self.future.done():
            return
        if self._errors:
            group = ExceptionGroup(
                f"master_worker: {len(self._errors)} of {len(self.work)} shares failed "
                f"(workers {sorted(map(repr, self._errors))})",
                list(self._errors.values()),
            )
            group.results = dict(self._results)  # type: ignore[attr-defined]
            self.future.set_exception((ExceptionGroup, group, None))
        else:
            self.future.set(dict(self._results))
