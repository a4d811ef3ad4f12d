"""Load-balanced coordination: spread items over whoever is available, results in input order.

    results = load_balanced(pool, items).get(timeout=60)         # a Pool (or Router) balances
    results = load_balanced([a, b, c], items, per_worker=2).get()  # work pulling over plain refs

Two ways to find "whoever is available":

- a `Pool` or `Router` ref: each item is asked through it, and its strategy
  (least connections by default for a pool) picks a routee with room; at
  most `max_in_flight` items are out at once (default: unbounded, the pool
  queues or grows as its config says).
- a list of actor refs: work pulling. Each worker holds at most `per_worker`
  items; it gets the next as soon as it returns one, so fast workers take
  more. A worker that stops has its item put back for the others and gets
  no more (at-least-once, as Akka's work pulling).
- any object with ``submit(item) -> Future``: the seam a Coordinator fills
  (it picks an agent by capability and load); treated like a pool.

The future is the list of results in input order. If items failed, it holds
an `ExceptionGroup` of every failure (each with a note naming its item
index), with the results that arrived as ``.results`` (None where failed).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from pykka import ActorDeadError

from actors import ActorRef, CoordinationInputError, Future

__all__ = ["Submitter", "load_balanced"]


@runtime_checkable
class Submitter(Protocol):
    """Something that runs one item on whoever is available and returns a future of its result."""

    def submit(self, item: Any) -> Future[Any]:
        """Start `item` somewhere; return a future of its result."""
        ...


def load_balanced(
    workers: ActorRef[Any] | Sequence[ActorRef[Any]] | Submitter,
    items: Iterable[Any],
    *,
    per_worker: int = 1,
    max_in_flight: int | None = None,
) -> Future[list[Any]]:
    """Run every item on an available worker; return a future of the results in input order.

    Raises:
        CoordinationInputError: an empty list of workers, per_worker or max_in_flight < 1,
            or workers of another kind.
    """
    if isinstance(per_worker, bool) or not isinstance(per_worker, int) or per_worker < 1:
        msg = f"load_balanced per_worker must be an int >= 1, got {per_worker!r}"
        raise CoordinationInputError(msg)
    if max_in_flight is not None and (isinstance(max_in_flight, bool) or max_in_flight < 1):
        msg = f"load_balanced max_in_flight must be an int >= 1 or None, got {max_in_flight!r}"
        raise CoordinationInputError(msg)
    queue = deque(enumerate(items))
    if isinstance(workers, ActorRef):
        return _Balanced(queue, [], max_in_flight, lambda item: workers.ask(item, block=False)).start()
    if isinstance(workers, Submitter):
        return _Balanced(queue, [], max_in_flight, workers.submit).start()
    if not isinstance(workers, Sequence) or not all(isinstance(w, ActorRef) for w in workers):
        msg = f"load_balanced needs a Pool/Router ref, a list of actor refs or a Submitter, got {workers!r}"
        raise CoordinationInputError(msg)
    if not workers:
        msg = "load_balanced needs at least one worker; got an empty list"
        raise CoordinationInputError(msg)
    slots = [w for w in workers for _ in range(per_worker)]
    return _Balanced(queue, slots, None, None).start()


class _Balanced:
    """One run. With `slots` (work pulling) each slot is a worker's turn; else `submit` and a window."""

    def __init__(
        self,
        queue: deque[tuple[int, Any]],
        slots: list[ActorRef[Any]],
        window: int | None,
        submit: Any,
    ) -> None:
        self.queue = queue
        self.total = len(queue)
        self.slots = slots
        self.window = window
        self.submit = submit
        self.future: Future[list[Any]] = Future()
        self._lock = threading.Lock()
        self._results: list[Any] = [None] * self.total
        self._errors: dict[int, Exception] = {}
        self._ended = 0
        self._dead: set[ActorRef[Any]] = set()
        self._local = threading.local()

    def start(self) -> Future[list[Any]]:
        if not self.total:
            self.future.set([])
            return self.future
        if self.slots:
            for worker in self.slots:
                self._pull(worker)
        else:
            for _ in range(self.window or self.total):
                self._next_submitted()
        return self.future

    # Work pulling: a worker's slot takes the next item when it frees.
    def _pull(self, worker: ActorRef[Any]) -> None:
        with self._lock:
            if worker in self._dead or not self.queue:
                return
            index, item = self.queue.popleft()
        future = worker.ask(item, block=False)
        future.add_done_callback(lambda f: self._pulled(worker, index, item, f))

    def _pulled(self, worker: ActorRef[Any], index: int, item: Any, future: Any) -> None:
        try:
            value = future.get()
        except ActorDeadError as exc:
            with self._lock:
                self._dead.add(worker)
                alive = [w for w in self.slots if w not in self._dead]
                if alive:
                    self.queue.appendleft((index, item))  # back for the others
            if alive:
                for other in alive:
                    self._pull(other)  # an idle one takes it; busy ones return at once
                return
            self._record(index, None, exc)
            self._fail_rest(exc)
            return
        except Exception as exc:  # noqa: BLE001 - every failure is re-raised in the group
            self._record(index, None, exc)
        else:
            self._record(index, value, None)
        self._pull(worker)

    def _fail_rest(self, cause: BaseException) -> None:
        with self._lock:
            rest = list(self.queue)
            self.queue.clear()
        for index, _ in rest:
            msg = f"load_balanced: no live worker left for item {index}"
            self._record(index, None, ActorDeadError(msg))
        del cause

    # A pool or submitter balances; a window bounds what is out. A future that is
    # done at once runs its callback on this thread, inside `_submit_one`: the
    # trampoline turns that recursion (one level per item) into a loop.
    def _next_submitted(self) -> None:
        local = self._local
        if getattr(local, "active", False):
            local.owed += 1
            return
        local.active, local.owed = True, 1
        try:
            while local.owed:
                local.owed -= 1
                self._submit_one()
        finally:
            local.active = False

    def _submit_one(self) -> None:
        with self._lock:
            if not self.queue:
                return
            index, item = self.queue.popleft()
        try:
            future = self.submit(item)
        except Exception as exc:  # noqa: BLE001 - every failure is re-raised in the group
            self._record(index, None, exc)
            self._next_submitted()
            return
        future.add_done_callback(lambda f: self._submitted(index, f))

    def _submitted(self, index: int, future: Any) -> None:
        try:
            self._record(index, future.get(), None)
        except Exception as exc:  # noqa: BLE001 - every failure is re-raised in the group
            self._record(index, None, exc)
        self._next_submitted()

    def _record(self, index: int, value: Any, error: Exception | None) -> None:
        with self._lock:
            if error is None:
                self._results[index] = value
            else:
                error.add_note(f"from load_balanced's item {index}")
                self._errors[index] = error
            self._ended += 1
            done = self._ended == self.total
        if not done:
            return
        if self._errors:
            group = ExceptionGroup(
                f"load_balanced: {len(self._errors)} of {self.total} items failed (items {sorted(self._errors)[:10]})",
                [self._errors[i] for i in sorted(self._errors)],
            )
            group.results = list(self._results)  # type: ignore[attr-defined]
            self.future.set_exception((ExceptionGroup, group, None))
        else:
            self.future.set(list(self._results))
