"""A router's table: its routees, their load, and how a message gets to one.

`Routee` is one routee as strategies see it (its ref, what it declares, its
load). The tracked futures (`_TrackedFuture`, `_TrackedReceipt`) settle a
routee's load before they wake whoever waits on them. `RoutingTable` is
shared by a router's ref (senders' threads) and its actor: membership
(`add`, `remove`, `drop_dead`), sending (`send_tell`, `send_ask`) and
accounting (`finished`, `totals`, `statistics`). Under `Admission` limits
its `admission` (an `AdmissionControl`, see `actors.routing.admission`)
decides where each message goes, under the table's lock.
"""

from __future__ import annotations

import threading
from _thread import allocate_lock
from typing import TYPE_CHECKING, Any, Protocol

from pykka import ActorDeadError

from actors._core import ActorRef, Future, Receipt
from actors.errors import NoRouteeError, TroupeError, TroupeInternalError
from actors.routing.admission import AdmissionControl
from actors.routing.messages import RouteeStatistics, RouterStatistics, _Route

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from actors._core import Cell, Clock, Scheduler
    from actors.routing.admission import Admission
    from actors.routing.messages import AddRoutee

__all__ = ["Routee", "RoutingTable", "Strategy"]

_EMA_WEIGHT = 0.1
"""Weight of the newest sample in a routee's moving average of response time (the Rust pool's 0.9/0.1)."""


# -- routees -------------------------------------------------------------------------------------------


class Routee:
    """One routee as strategies see it: its ref, what it declares, and its load.

    Strategies read these attributes without a lock, from any thread. Treat
    them as read-only.

    Attributes:
        ref: the routee's `ActorRef`.
        capabilities: what it declared (``weighted_capabilities``).
        weight: its weight, > 0.
        key: a stable identity (its URN), what ``consistent_hash`` hashes.
        in_flight: messages handed to it and not yet answered (asks; tells
            too under `Admission` limits).
        average_response_time: moving average of response time in seconds
            of the system's clock, or None before its first reply.
        oldest_start: clock time the oldest message in flight was handed to
            it, or None.
        processed: replies received; failed: of which failures.
        total_time: seconds spent on the processed ones.
        last_active: clock time it last started or finished a message.
    """

    __slots__ = (
        "average_response_time",
        "capabilities",
        "cell",
        "failed",
        "key",
        "last_active",
        "lock",
        "plain",
        "processed",
        "ref",
        "retired",
        "started",
        "total_time",
        "weight",
    )

    def __init__(self, ref: ActorRef[Any], capabilities: frozenset[str], weight: float, now: float) -> None:
        self.ref = ref
        self.cell: Cell = ref.actor_inbox
        # A plain ActorRef's tell is a mailbox append that fast paths may do
        # themselves; anything else (a router) must be told through its ref.
        self.plain = type(ref) is ActorRef
        self.capabilities = capabilities
        self.weight = weight
        self.key = ref.actor_urn
        # Invariant: the reply futures of the messages in flight, with the
        # clock time each was handed over, oldest first. Only single dict
        # operations touch it (atomic), so senders and finishing routees never
        # wait for each other: len() is the load, exact at every moment.
        self.started: dict[Future[Any], float] = {}
        # Guards the reply statistics below. A routee's replies are set one at
        # a time by its own turns, so this lock is all but never contended.
        self.lock = allocate_lock()
        self.average_response_time: float | None = None
        self.processed = 0
        self.failed = 0
        self.total_time = 0.0
        self.last_active = now
        # Set once it has left the table; its counts then go to the router's totals.
        self.retired = False

    def __repr__(self) -> str:
        return f"<Routee {self.ref} in_flight={self.in_flight}>"

    @property
    def in_flight(self) -> int:
        """Messages handed to it and not yet answered."""
        return len(self.started)

    @property
    def oldest_start(self) -> float | None:
        """Clock time the oldest message in flight was handed to it, or None."""
        started = self.started
        for _ in range(3):
            try:
                return next(iter(started.values()), None)
            except RuntimeError:  # changed under our feet by another thread: look again
                continue
        return None

    @property
    def alive(self) -> bool:
        """Whether the routee's actor is alive."""
        return self.cell.alive

    @property
    def mailbox_size(self) -> int:
        """Messages waiting in its mailbox, plus one if it is handling one now (or about to)."""
        cell = self.cell
        return len(cell.queue) + (1 if cell.sched.locked() else 0)

    def _replied(self, elapsed: float, now: float, *, failed: bool) -> None:
        with self.lock:
            average = self.average_response_time
            self.average_response_time = (
                elapsed if average is None else (1 - _EMA_WEIGHT) * average + _EMA_WEIGHT * elapsed
            )
            self.processed += 1
            self.total_time += elapsed
            if failed:
                self.failed += 1
            self.last_active = now

    def statistics(self) -> RouteeStatistics:
        """Return a snapshot of this routee's load."""
        with self.lock:
            processed, failed, average = self.processed, self.failed, self.average_response_time
        return RouteeStatistics(
            ref=self.ref,
            capabilities=self.capabilities,
            weight=self.weight,
            active=len(self.started),
            queue_length=len(self.cell.queue),
            average_response_time=average,
            processed=processed,
            failed=failed,
            success_rate=(processed - failed) / processed if processed else 1.0,
            last_active=self.last_active,
        )


# -- tracked futures -------------------------------------------------------------------------------


class _TrackedFuture(Future[Any]):
    """A reply future that settles its routee's load before anyone waiting on it wakes.

    Accounting first means a caller that sends its next message the moment
    it has a reply finds the routee's slot free again (a done-callback would
    run after the waiter woke). It also takes no lock shared across routees.
    """

    __slots__ = ("_routee", "_table")

    def __init__(self) -> None:
        super().__init__()
        self._table: RoutingTable | None = None
        self._routee: Routee | None = None

    def _settle(self) -> None:
        table = self._table
        if table is not None:
            table.finished(self)
        Future._settle(self)  # noqa: SLF001 - the base class's own step


class _TrackedReceipt(Receipt[Any]):
    """A tell's receipt that settles its routee's load as `_TrackedFuture` does."""

    __slots__ = ("_routee", "_table")

    def __init__(self) -> None:
        super().__init__()
        self._table: RoutingTable | None = None
        self._routee: Routee | None = None

    def _settle(self) -> None:
        table = self._table
        if table is not None:
            table.finished(self)  # type: ignore[arg-type]
        Future._settle(self)  # noqa: SLF001


def _forward(done: Future[Any], future: Future[Any]) -> None:
    """Pass a settled future's outcome on to another."""
    if done._exc_info is not None:  # noqa: SLF001
        future.set_exception(done._exc_info)  # noqa: SLF001
    else:
        future.set(done._value)  # noqa: SLF001


# -- the table ----------------------------------------------------------------------------------------


class Strategy(Protocol):
    """What a table needs of its strategy: the part of `RoutingStrategy` (see there) it calls.

    Strategies build on the table (they read its routees and send through
    it); the table names only this, so the two modules do not import each other.
    """

    @property
    def name(self) -> str:
        """The strategy's name, for statistics."""
        ...

    @property
    def thread_safe(self) -> bool:
        """Whether it may route on the sender's thread."""
        ...

    @property
    def turn(self) -> Callable[[], int] | None:
        """The round-robin counter of the fast path, or None."""
        ...

    def attach(self, table: RoutingTable) -> None:
        """Bind the strategy to its table."""
        ...

    def routees_changed(self, routees: tuple[Routee, ...]) -> None:
        """Learn the new set of routees."""
        ...

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Choose the routee for one message."""
        ...

    def route_tell(self, table: RoutingTable, message: Any) -> None:
        """Send a tell."""
        ...

    def route_ask(self, table: RoutingTable, message: Any, future: Future[Any], inline: bool) -> None:
        """Send an ask whose reply goes into `future`."""
        ...


class RoutingTable:
    """A router's routees, strategy and load accounting, shared by its ref and its actor.

    Thread contract: every method may be called from any thread. Reads of
    `routees` take no lock. A routee's load is kept in its own `Routee`
    (see there), so sending and finishing take no lock shared across
    routees; `lock` guards membership changes and, under `Admission`
    limits, the decision where a message goes and the waiting queue (kept
    by `admission`).
    """

    def __init__(
        self,
        ref: ActorRef[Any],
        strategy: Strategy,
        *,
        rng: random.Random,
        admission: Admission | None,
        special: dict[type, int],
    ) -> None:
        self.ref = ref
        cell = ref.actor_inbox
        self.clock: Clock = cell.system.clock
        self.scheduler: Scheduler = cell.system.scheduler
        self.dead_letters = cell.system.dead_letters
        self.rng = rng
        self.strategy = strategy
        # Message classes the ref must not route (see RouterRef); read lock-free.
        self.special = special
        self.lock = threading.Lock()
        # Invariant: replaced whole under `lock`, never mutated; order is join order.
        self.routees: tuple[Routee, ...] = ()
        # The ref's hot path for turn-based strategies: the routees' cells, in
        # table order, when every routee is a plain ActorRef (whose tell is a
        # mailbox append); empty means "call route_tell". Replaced with `routees`.
        self.turn = strategy.turn if admission is None and strategy.thread_safe else None
        self.turn_cells: tuple[Cell, ...] = ()
        # Reply counts of routees that have left the table (theirs are in the Routee);
        # guarded by `lock`.
        self.retired_processed = 0
        self.retired_failed = 0
        self.retired_time = 0.0
        # Routees dropped because they stopped; guarded by `lock`.
        self.dead_removed = 0
        # Under limits, what decides where each message goes (it shares `lock`).
        self.admission = None if admission is None else AdmissionControl(self, admission, _TrackedReceipt)
        strategy.attach(self)
        strategy.routees_changed(())
        if self.admission is not None:
            self.route_tell = self.admission.tell  # type: ignore[method-assign]
            self.route_ask = self.admission.ask  # type: ignore[method-assign]
        elif not strategy.thread_safe:
            self.route_tell = self._tell_via_router  # type: ignore[method-assign]
            self.route_ask = self._ask_via_router  # type: ignore[method-assign]
        else:
            self.route_tell = self._route_tell_here  # type: ignore[method-assign]
            self.route_ask = self._route_ask_here  # type: ignore[method-assign]

    # -- entry points (the ref calls these on the sender's thread) ------------------------------------

    def route_tell(self, message: Any) -> None:
        """Route a tell (bound at construction to the path this table takes)."""
        raise NotImplementedError

    def route_ask(self, message: Any, future: Future[Any], inline: bool) -> None:
        """Route an ask into `future` (bound at construction to the path this table takes)."""
        raise NotImplementedError

    def _route_tell_here(self, message: Any) -> None:
        self.strategy.route_tell(self, message)

    def _route_ask_here(self, message: Any, future: Future[Any], inline: bool) -> None:
        self.strategy.route_ask(self, message, future, inline)

    def _tell_via_router(self, message: Any) -> None:
        ActorRef.tell(self.ref, _Route(message, None))

    def _ask_via_router(self, message: Any, future: Future[Any], inline: bool) -> None:
        ActorRef.tell(self.ref, _Route(message, future))

    def route_here(self, route: _Route) -> None:
        """Route a message that came through the router's mailbox (on the router's thread)."""
        admission = self.admission
        if route.reply is None:
            if admission is not None:
                admission.tell(route.message)
            else:
                self.strategy.route_tell(self, route.message)
            return
        try:
            if admission is not None:
                admission.ask(route.message, route.reply, False)
            else:
                self.strategy.route_ask(self, route.message, route.reply, False)
        except (ActorDeadError, TroupeError):
            if not route.reply.done():
                route.reply.set_exception()

    # -- sending to one routee ---------------------------------------------------------------------

    def send_tell(self, routee: Routee, message: Any) -> bool:
        """Tell `routee`; return False if it turned out to have stopped (the message is a dead letter)."""
        try:
            routee.ref.tell(message)
        except ActorDeadError:
            return False
        return True

    def send_ask(self, routee: Routee, message: Any, future: Future[Any], *, inline: bool) -> None:
        """Ask `routee` into `future`, counting the ask in flight until `future` is set."""
        tracked = self.track(routee, future, self.clock.now())
        routee.ref._post_ask(message, tracked, inline=inline)  # noqa: SLF001 - the runtime's own seam

    def track(self, routee: Routee, future: Future[Any], now: float) -> Future[Any]:
        """Count `future` in flight on `routee` from `now`; return the future to hand the routee."""
        cls = future.__class__
        if (cls is _TrackedFuture or cls is _TrackedReceipt) and future._table is None:  # type: ignore[attr-defined]  # noqa: SLF001
            tracked = future
        else:
            # Someone else's future (an outer router's, when routers nest):
            # track a future of our own and pass its outcome on.
            tracked = _TrackedReceipt() if isinstance(future, Receipt) else _TrackedFuture()
            tracked.add_done_callback(lambda done: _forward(done, future))
        tracked._table = self  # type: ignore[attr-defined]  # noqa: SLF001
        tracked._routee = routee  # type: ignore[attr-defined]  # noqa: SLF001
        routee.started[tracked] = now
        routee.last_active = now
        return tracked

    def finished(self, future: _TrackedFuture) -> None:
        """Settle the load of the routee `future` was handed to (runs just before `future` wakes anyone).

        Runs on the thread that sets the future: usually the routee's, at the
        end of its handler. Must not raise.
        """
        routee = future._routee  # noqa: SLF001
        if routee is None:  # a tracked future is handed to a routee before anyone can set it
            msg = f"a tracked reply future of {self.ref} was set before it was handed to a routee"
            raise TroupeInternalError(msg)
        start = routee.started.pop(future, None)
        if start is None:
            return  # settled twice (two parties raced to set it)
        now = self.clock.now()
        routee._replied(max(0.0, now - start), now, failed=future._exc_info is not None)  # noqa: SLF001
        if routee.retired:
            with self.lock:
                self._retire(routee)
        admission = self.admission
        if admission is not None:
            admission.finished()

    def new_future(self) -> Future[Any]:
        """Return a reply future whose routee's load `send_ask` can track (for fan-out strategies)."""
        return _TrackedFuture()

    # -- fan-out helpers -----------------------------------------------------------------------------

    def live_routees(self) -> list[Routee]:
        """Return the routees that are alive, dropping the dead ones from the table."""
        routees = self.routees
        live = [r for r in routees if r.cell.alive]
        if len(live) != len(routees):
            self.drop_dead()
        return live

    def broadcast_tell(self, message: Any) -> None:
        """Tell every live routee `message`."""
        routees = self.live_routees()
        if not routees:
            raise self.no_routee(message)
        for routee in routees:
            self.send_tell(routee, message)

    # -- membership ------------------------------------------------------------------------------------

    def find(self, ref: ActorRef[Any]) -> Routee | None:
        """Return the routee for `ref`, or None."""
        for routee in self.routees:
            if routee.ref is ref:
                return routee
        return None

    def add(self, spec: AddRoutee, *, grown: bool = False) -> Routee:
        """Add a routee (or update what an existing one declares); return it.

        With `grown`, this answers an `Admission.grow` call. Messages waiting
        for room go to the new routee at once.
        """
        now = self.clock.now()
        admission = self.admission
        with self.lock:
            if grown and admission is not None:
                admission.arrived()
            routee = self.find(spec.ref)
            if routee is not None:
                routee.capabilities = spec.capabilities
                routee.weight = spec.weight
                self._publish(self.routees)
            else:
                routee = Routee(spec.ref, spec.capabilities, spec.weight, now)
                self._publish((*self.routees, routee))
        if admission is not None:
            admission.drain_pending()
        return routee

    def remove(self, ref: ActorRef[Any], *, only_if_idle: bool = False, terminated: bool = False) -> Routee | None:
        """Remove the routee for `ref` and return it (None if absent, or busy with `only_if_idle`).

        With `terminated`, it is counted as a dead routee removed. Messages
        already handed to it are not recalled; their replies still count.
        """
        with self.lock:
            routee = self.find(ref)
            if routee is None or (only_if_idle and routee.started):
                return None
            self._publish(tuple(r for r in self.routees if r is not routee))
            self._retire(routee)
            if terminated:
                self.dead_removed += 1
        return routee

    def drop_dead(self) -> int:
        """Remove every routee that has stopped; return how many."""
        with self.lock:
            live = tuple(r for r in self.routees if r.cell.alive)
            dead = [r for r in self.routees if not r.cell.alive]
            if dead:
                self.dead_removed += len(dead)
                self._publish(live)
                for routee in dead:
                    self._retire(routee)
        return len(dead)

    def _retire(self, routee: Routee) -> None:
        # Called with `lock` held: move its counts into the router's totals.
        # Replies still due from it are moved as they come (see `finished`).
        routee.retired = True
        with routee.lock:
            self.retired_processed += routee.processed
            self.retired_failed += routee.failed
            self.retired_time += routee.total_time
            routee.processed = routee.failed = 0
            routee.total_time = 0.0

    def _publish(self, routees: tuple[Routee, ...]) -> None:
        # Called with `lock` held. `turn_cells` is cleared first and set last, so
        # a sender never pairs a new turn with a stale table for long.
        self.turn_cells = ()
        self.strategy.routees_changed(routees)
        self.routees = routees
        if self.turn is not None and all(r.plain for r in routees):
            self.turn_cells = tuple(r.cell for r in routees)

    # -- errors and statistics ------------------------------------------------------------------------

    def no_routee(self, message: Any) -> NoRouteeError:
        """Build the error for a message that finds no routee at all."""
        msg = (
            f"{self.ref} has no live routee to take {type(message).__name__}; "
            "add one with AddRoutee(ref) or wait for its pool to grow"
        )
        return NoRouteeError(msg)

    def totals(self) -> tuple[int, int, float]:
        """Return (processed, failed, seconds spent) over every routee it has had."""
        with self.lock:
            processed, failed, spent = self.retired_processed, self.retired_failed, self.retired_time
            for routee in self.routees:
                with routee.lock:
                    processed += routee.processed
                    failed += routee.failed
                    spent += routee.total_time
        return processed, failed, spent

    def statistics(self) -> RouterStatistics:
        """Return a snapshot of the routees' load and the router's counters."""
        processed, failed, spent = self.totals()
        admission = self.admission
        with self.lock:
            routees, dead_removed = self.routees, self.dead_removed
            waiting = 0 if admission is None else admission.waiting
        return RouterStatistics(
            strategy=self.strategy.name,
            routees=tuple(r.statistics() for r in routees),
            waiting=waiting,
            processed=processed,
            failed=failed,
            average_response_time=spent / processed if processed else 0.0,
            dead_routees_removed=dead_removed,
        )
