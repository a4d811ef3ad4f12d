"""Routers: actors that forward each message to one or several routees, chosen by a strategy.

    router = system.spawn(Router, [worker_a, worker_b], strategy="least_connections")
    router.tell(job)                          # goes to one routee
    router.ask(query)                         # the routee's reply comes straight back
    router.tell(Broadcast(reset))             # goes to every routee
    router.ask(AddRoutee(worker_c, capabilities={"sql"}, weight=2.0))
    router.ask(GetStatistics())               # a frozen RouterStatistics snapshot

The router actor is not on the message path (Akka's design, "routers route on
the sender's thread"). A router's ref is a `RouterRef`: its `tell` and `ask`
run the strategy on the caller's thread and hand the message straight to the
chosen routee's mailbox, so a routed tell costs one mailbox hop, not two. An
ask's future travels with the message: the routee replies into it and the
router never waits. The router actor itself handles what changes or reads
the routing table (`AddRoutee`, `RemoveRoutee`, `GetRoutees`,
`GetStatistics`), proxy calls and `stop()`, in its mailbox, one at a time.

The routing table is an immutable tuple of `Routee` objects, replaced (under
a lock) whenever a routee joins or leaves; senders read whichever tuple is
current, without a lock. A routee that stops is never routed to: the sender
checks it is alive before handing it a message, and the router drops it from
the table when it learns of its death. A message that races with a routee's
death (the routee stops between that check and the hand-off) is a dead
letter for that routee; a tell is then routed again, to another routee.

Strategies (`actors.routing.strategies`) pick the routee(s) for each
message. A strategy's `select` runs on senders' threads, concurrently, so it
must be thread-safe (every built-in one is); a strategy that cannot be made
so sets ``thread_safe = False`` and its messages go through the router's
mailbox instead, one at a time.

Load. The router measures each routee's asks: in flight, a moving average
of response time (on the system's clock, so tests drive it), successes and
failures. A reply future settles its routee's load before it wakes the
asker, and no lock is shared across routees to do it. Tells are not tracked
unless the router has `Admission` limits (what `actors.Pool` sets): then
each tell carries a `Receipt` and counts as in flight until it is handled.

Randomness (``random``, ``weighted_capabilities``, ``tail_chopping``) comes
from the router's `random.Random` (``rng=``), which tests seed; delays
(``scatter_gather_first``'s and ``tail_chopping``'s deadlines) run on the
system's scheduler, so a `ManualClock` drives them.
"""

from __future__ import annotations

import math
import random
import threading
from _thread import allocate_lock
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import attrs
import pykka
from pykka import ActorDeadError

from actors._core import MESSAGE_KINDS as _CELL_KINDS
from actors._core import Actor, ActorRef, DeadLetterReason, Future, Receipt, Terminated
from actors.errors import NoRouteeError, TroupeError
from actors.routing.strategies import RoutingStrategy, capability_set, gather, routing_strategy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from actors._core import Cell, Clock, Scheduler

__all__ = [
    "AddRoutee",
    "Admission",
    "Broadcast",
    "GetRoutees",
    "GetStatistics",
    "RemoveRoutee",
    "Routee",
    "RouteeStatistics",
    "Router",
    "RouterRef",
    "RouterStatistics",
    "RoutingTable",
]

A = TypeVar("A", bound=pykka.Actor)

_EMA_WEIGHT = 0.1
"""Weight of the newest sample in a routee's moving average of response time (the Rust pool's 0.9/0.1)."""


# -- messages ------------------------------------------------------------------------------------


def _check_routee_ref(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, ActorRef):
        msg = (
            f"{attribute.name} must be the ActorRef of a troupe actor (what system.spawn returns), "
            f"got {value!r}; spawn the routee with an ActorSystem first"
        )
        raise TypeError(msg)


def _check_weight(_: object, __: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        msg = f"a routee's weight must be a finite number > 0, got {value!r}"
        raise ValueError(msg)


@attrs.frozen
class AddRoutee:
    """Add a routee to a router (or update what it declares, if it is one already).

    Also what a `Router` takes for a routee that declares capabilities and a
    weight (for ``weighted_capabilities``). Asked, the reply is None once the
    routee is in the table.
    """

    ref: ActorRef[Any] = attrs.field(validator=_check_routee_ref)
    capabilities: frozenset[str] = attrs.field(default=frozenset(), converter=capability_set)
    weight: float = attrs.field(default=1.0, validator=_check_weight)


@attrs.frozen
class RemoveRoutee:
    """Remove a routee from a router. Asked, the reply says whether it was one."""

    ref: ActorRef[Any]


@attrs.frozen
class GetRoutees:
    """Ask a router for its routees' refs, in table order."""


@attrs.frozen
class GetStatistics:
    """Ask a router (or a pool) for a snapshot of its statistics."""


@attrs.frozen
class Broadcast:
    """Send `message` to every routee, whatever the router's strategy.

    Told, each routee is told `message`. Asked, the reply is the tuple of
    every routee's reply, in table order; the first failure fails the ask.
    """

    message: Any


@attrs.frozen
class _Managed:
    """An ask of a management message: the router replies into `reply` (possibly later)."""

    message: Any
    reply: Future[Any]


@attrs.frozen
class _Route:
    """A message the router must route from its own thread (strategy not thread-safe, or not yet installed)."""

    message: Any
    reply: Future[Any] | None
    inline: bool = False


# -- statistics --------------------------------------------------------------------------------------


@attrs.frozen
class RouteeStatistics:
    """One routee's load, as the router measured it.

    Attributes:
        ref: the routee.
        capabilities: what it declared.
        weight: its weight for ``weighted_capabilities``.
        active: messages in flight (asks; tells too under `Admission` limits).
        queue_length: messages waiting in its mailbox.
        average_response_time: moving average of its response time, in
            seconds of the system's clock; None before its first reply.
        processed: replies received (successes and failures).
        failed: of which failures.
        success_rate: ``(processed - failed) / processed``; 1.0 before any.
        last_active: clock time it last started or finished a message.
    """

    ref: ActorRef[Any]
    capabilities: frozenset[str]
    weight: float
    active: int
    queue_length: int
    average_response_time: float | None
    processed: int
    failed: int
    success_rate: float
    last_active: float


@attrs.frozen
class RouterStatistics:
    """A router's state at one moment.

    Attributes:
        strategy: the strategy's name.
        routees: each routee's load, in table order.
        waiting: messages waiting in the router for a routee under its limits.
        processed: replies (and, under limits, handled tells) received.
        failed: of which failures.
        average_response_time: mean response time over `processed`, in
            seconds of the system's clock; 0.0 before any.
        dead_routees_removed: routees dropped from the table because they stopped.
    """

    strategy: str
    routees: tuple[RouteeStatistics, ...]
    waiting: int
    processed: int
    failed: int
    average_response_time: float
    dead_routees_removed: int


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


# -- admission limits ---------------------------------------------------------------------------------


@attrs.frozen
class Admission:
    """Limits on the work a router hands its routees, and what happens beyond them (what `Pool` sets).

    With limits, every message in flight is counted (tells carry a
    `Receipt`), a routee at `max_concurrent` is not chosen, and a message
    for which no routee has room waits in the router (in order) or is
    refused.

    Attributes:
        max_concurrent: messages a routee may have in flight at once.
        queue_capacity: messages that may wait when every routee is at its
            limit and the router cannot grow (0: refuse at once).
        max_size: routees the router may grow to; None: it never grows.
        grow: called, on a sender's thread and without locks held, when the
            router should get one more routee; the owner then calls
            `RoutingTable.add` with ``grown=True``, or `growth_failed`. While
            routees are being grown, as many messages as they will have room
            for wait for them.
        exhausted: builds the error a refused message gets.
    """

    max_concurrent: int
    queue_capacity: int = 0
    max_size: int | None = None
    grow: Callable[[], None] | None = None
    exhausted: Callable[[], BaseException] | None = None


# -- the table ----------------------------------------------------------------------------------------


class RoutingTable:
    """A router's routees, strategy and load accounting, shared by its ref and its actor.

    Thread contract: every method may be called from any thread. Reads of
    `routees` take no lock. A routee's load is kept in its own `Routee`
    (see there), so sending and finishing take no lock shared across
    routees; `lock` guards membership changes and, under `Admission`
    limits, the decision where a message goes and the waiting queue.
    """

    def __init__(
        self,
        ref: RouterRef[Any],
        strategy: RoutingStrategy,
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
        self.admission = admission
        # Message classes the ref must not route (see RouterRef); read lock-free.
        self.special = special
        self.lock = threading.Lock()
        # Invariant: replaced whole under `lock`, never mutated; order is join order.
        self.routees: tuple[Routee, ...] = ()
        # Messages waiting for room under admission limits, oldest first;
        # guarded by `lock`: (message, reply future or receipt, is it a tell).
        self.pending: deque[tuple[Any, Future[Any], bool]] = deque()
        # Routees being grown (admission.grow called, not yet added or failed); guarded by `lock`.
        self.growing = 0
        # Set when the router drains for shutdown: no new work is taken.
        self.closed = False
        # Called (on whichever thread finished the last message) when nothing is in flight or waiting.
        self.on_idle: Callable[[], None] | None = None
        # The ref's hot path for turn-based strategies: the routees' cells, in
        # table order, when every routee is a plain ActorRef (whose tell is a
        # mailbox append); empty means "call route_tell". Replaced with `routees`.
        self.turn = strategy.turn if admission is None and strategy.thread_safe else None
        self.turn_cells: tuple[Cell, ...] = ()
        # Reply counts of routees that have left the table (theirs are in the Routee).
        self.retired_processed = 0
        self.retired_failed = 0
        self.retired_time = 0.0
        # Admission counters, guarded by `lock`.
        self.admitted_at_once = 0
        self.admitted_after_wait = 0
        self.refused = 0
        self.dead_removed = 0
        strategy.attach(self)
        strategy.routees_changed(())
        if admission is not None:
            self.route_tell = self._admit_tell  # type: ignore[method-assign]
            self.route_ask = self._admit_ask  # type: ignore[method-assign]
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
        if route.reply is None:
            if self.admission is not None:
                self._admit_tell(route.message)
            else:
                self.strategy.route_tell(self, route.message)
            return
        try:
            if self.admission is not None:
                self._admit_ask(route.message, route.reply, False)
            else:
                self.strategy.route_ask(self, route.message, route.reply, False)
        except (ActorDeadError, TroupeError):
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
        tracked = self._track(routee, future, self.clock.now())
        routee.ref._post_ask(message, tracked, inline=inline)  # noqa: SLF001 - the runtime's own seam

    def _track(self, routee: Routee, future: Future[Any], now: float) -> Future[Any]:
        """Count `future` in flight on `routee`; return the future to hand the routee."""
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
        assert routee is not None
        start = routee.started.pop(future, None)
        if start is None:
            return  # settled twice (two parties raced to set it)
        now = self.clock.now()
        routee._replied(max(0.0, now - start), now, failed=future._exc_info is not None)  # noqa: SLF001
        if routee.retired:
            with self.lock:
                self._retire(routee)
        if self.pending:
            # Room just appeared: hand it to whatever waits. A sender that saw
            # no room appends under the lock and then looks again (see
            # `_admit`), so a message never waits with room free.
            self._drain_pending()
        if self.on_idle is not None and not self.busy():
            self.on_idle()

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

    def new_future(self) -> Future[Any]:
        """Return a reply future whose routee's load `send_ask` can track (for fan-out strategies)."""
        return _TrackedFuture()

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
        with self.lock:
            if grown:
                self.growing = max(0, self.growing - 1)
            routee = self.find(spec.ref)
            if routee is not None:
                routee.capabilities = spec.capabilities
                routee.weight = spec.weight
                self._publish(self.routees)
            else:
                routee = Routee(spec.ref, spec.capabilities, spec.weight, now)
                self._publish((*self.routees, routee))
        if self.pending:
            self._drain_pending()
        return routee

    def remove(self, ref: ActorRef[Any], *, only_if_idle: bool = False) -> Routee | None:
        """Remove the routee for `ref` and return it (None if absent, or busy with `only_if_idle`).

        Messages already handed to it are not recalled; their replies still count.
        """
        with self.lock:
            routee = self.find(ref)
            if routee is None or (only_if_idle and routee.started):
                return None
            self._publish(tuple(r for r in self.routees if r is not routee))
            self._retire(routee)
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

    def growth_failed(self, error: BaseException) -> None:
        """Answer an `Admission.grow` call that produced no routee.

        If no routee is left to take them, the messages waiting for room get
        `error` (asks) or become dead letters (tells).
        """
        with self.lock:
            self.growing = max(0, self.growing - 1)
            stranded: list[tuple[Any, Future[Any], bool]] = []
            if not self.growing and not any(r.cell.alive for r in self.routees):
                stranded = list(self.pending)
                self.pending.clear()
        for message, future, is_tell in stranded:
            self.reject(message, future, is_tell, error)

    def _publish(self, routees: tuple[Routee, ...]) -> None:
        # Called with `lock` held. `turn_cells` is cleared first and set last, so
        # a sender never pairs a new turn with a stale table for long.
        self.turn_cells = ()
        self.strategy.routees_changed(routees)
        self.routees = routees
        if self.turn is not None and all(r.plain for r in routees):
            self.turn_cells = tuple(r.cell for r in routees)

    # -- admission (pools) -----------------------------------------------------------------------------

    def _admit_tell(self, message: Any) -> None:
        self._admit(message, _TrackedReceipt(), is_tell=True)

    def _admit_ask(self, message: Any, future: Future[Any], inline: bool) -> None:
        self._admit(message, future, is_tell=False, inline=inline)

    def _admit(self, message: Any, future: Future[Any], *, is_tell: bool, inline: bool = False) -> None:
        admission = self.admission
        assert admission is not None
        grow = False
        routee: Routee | None = None
        refused: BaseException | None = None
        with self.lock:
            if self.closed:
                refused = ActorDeadError(f"{self.ref} is draining for shutdown and takes no new work")
            else:
                # Behind messages already waiting, a message waits too (order is kept).
                routee = None if self.pending else self._choose(message)
                if routee is not None:
                    self.admitted_at_once += 1
                    future = self._track(routee, future, self.clock.now())
                else:
                    grow, waits = self._saturated()
                    if waits:
                        self.pending.append((message, future, is_tell))
                    else:
                        self.refused += 1
                        refused = (admission.exhausted or self._exhausted)()
        if grow and admission.grow is not None:
            admission.grow()
        if refused is not None:
            if is_tell:
                raise refused
            future.set_exception((type(refused), refused, None))
        elif routee is not None:
            self._deliver(routee, message, future, is_tell, inline=inline)
        else:
            # It waits. Room may have appeared since we looked (a routee that
            # finished before we appended found nothing waiting): look again.
            # A finishing routee frees its slot before it looks at `pending`,
            # so either it sees this message or we see its room. Looking needs
            # no lock; the lock is taken only if there is room to hand out.
            limit = admission.max_concurrent
            if any(len(r.started) < limit for r in self.routees):
                self._drain_pending()

    def _choose(self, message: Any) -> Routee | None:
        # Called with `lock` held: a routee with room, by the strategy, or None.
        # Raises NoRouteeError only if no routee could take the message even
        # with room (weighted_capabilities: none has the capabilities).
        assert self.admission is not None
        limit = self.admission.max_concurrent
        routees = self.routees
        eligible = [r for r in routees if len(r.started) < limit and r.cell.alive]
        if len(eligible) == len(routees):
            return self.strategy.select(message, routees) if routees else None
        try:
            return self.strategy.select(message, eligible) if eligible else None
        except NoRouteeError:
            self.strategy.select(message, routees)  # raises if none could, busy or not
            return None

    def _saturated(self) -> tuple[bool, bool]:
        # Called with `lock` held: (ask for one more routee?, may this message wait?).
        admission = self.admission
        assert admission is not None
        waiting = len(self.pending)
        room_coming = self.growing * admission.max_concurrent
        grow = False
        if waiting >= room_coming and admission.max_size is not None:
            size = sum(1 for r in self.routees if r.cell.alive) + self.growing
            if size < admission.max_size:
                self.growing += 1
                room_coming += admission.max_concurrent
                grow = True
        return grow, waiting < room_coming + admission.queue_capacity

    def _drain_pending(self) -> None:
        """Hand waiting messages, oldest first, to routees with room; refuse those none could take."""
        ready: list[tuple[Routee, Any, Future[Any], bool]] = []
        unable: list[tuple[Any, Future[Any], bool, BaseException]] = []
        with self.lock:
            now = self.clock.now()
            pending = self.pending
            while pending:
                message, future, is_tell = pending[0]
                try:
                    routee = self._choose(message)
                except NoRouteeError as exc:
                    pending.popleft()
                    unable.append((message, future, is_tell, exc))
                    continue
                if routee is None:
                    break
                pending.popleft()
                self.admitted_after_wait += 1
                ready.append((routee, message, self._track(routee, future, now), is_tell))
        for message, future, is_tell, error in unable:
            self.reject(message, future, is_tell, error)
        for routee, message, future, is_tell in ready:
            self._deliver(routee, message, future, is_tell)

    def _deliver(
        self, routee: Routee, message: Any, future: Future[Any], is_tell: bool, *, inline: bool = False
    ) -> None:
        # `future` is tracked on `routee` already.
        if is_tell:
            try:
                routee.ref._post_tell(message, cast("Receipt[Any]", future))  # noqa: SLF001 - a tell's is a receipt
            except (ActorDeadError, TroupeError):
                future.set_exception()  # recorded as a dead letter by the ref; frees the slot
        else:
            routee.ref._post_ask(message, future, inline=inline)  # noqa: SLF001

    def reject(self, message: Any, future: Future[Any], is_tell: bool, error: BaseException) -> None:
        """Refuse a message that waited: an ask gets `error`; a tell becomes a dead letter."""
        if is_tell:
            self.dead_letters.record(message, self.ref, DeadLetterReason.RECIPIENT_STOPPED, error)
        if not future.done():
            future.set_exception((type(error), error, None))

    def _exhausted(self) -> BaseException:
        assert self.admission is not None
        msg = (
            f"every routee of {self.ref} has {self.admission.max_concurrent} messages in flight and "
            f"{len(self.pending)} wait; retry later or raise its limits"
        )
        return NoRouteeError(msg)

    def close(self) -> list[tuple[Any, Future[Any], bool]]:
        """Take no new work from now on; return (and forget) the messages still waiting."""
        with self.lock:
            self.closed = True
            waiting = list(self.pending)
            self.pending.clear()
        return waiting

    def busy(self) -> bool:
        """Whether any message is in flight or waiting."""
        return bool(self.pending) or any(r.started for r in self.routees)

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
        with self.lock:
            routees, waiting, dead_removed = self.routees, len(self.pending), self.dead_removed
        return RouterStatistics(
            strategy=self.strategy.name,
            routees=tuple(r.statistics() for r in routees),
            waiting=waiting,
            processed=processed,
            failed=failed,
            average_response_time=spent / processed if processed else 0.0,
            dead_routees_removed=dead_removed,
        )


def _forward(done: Future[Any], future: Future[Any]) -> None:
    """Pass a settled future's outcome on to another."""
    if done._exc_info is not None:  # noqa: SLF001
        future.set_exception(done._exc_info)  # noqa: SLF001
    else:
        future.set(done._value)  # noqa: SLF001


# -- the ref and the actor ---------------------------------------------------------------------------

_TO_ROUTER, _MANAGE, _BROADCAST = 1, 2, 3
# Never routed: every message the cell itself interprets (proxy calls, both
# kinds of stop, timers, Terminated: the cell's own table, so none is
# forgotten), the router's private messages, and Broadcast.
_PYKKA_CONTROL: dict[type, int] = {
    **dict.fromkeys(_CELL_KINDS, _TO_ROUTER),
    _Managed: _TO_ROUTER,
    _Route: _TO_ROUTER,
    Broadcast: _BROADCAST,
}


class RouterRef(ActorRef[A]):
    """The address of a router: `tell` and `ask` route on the caller's thread.

    Messages the router itself handles (its management messages, proxy calls,
    `stop()`) go to its mailbox; every other message goes to the routee the
    strategy picks, and an ask's reply comes straight from that routee. If
    the router has stopped, `tell` raises `ActorDeadError` as for any actor;
    if it has no routee to take the message, `tell` raises `NoRouteeError`
    (an ask gets it on its future).
    """

    __slots__ = ("_routing",)

    def __init__(self, cell: Cell) -> None:
        super().__init__(cell)
        # Installed by the Router's constructor; until then messages go through the mailbox.
        self._routing: RoutingTable | None = None

    def tell(self, message: Any) -> None:
        """Send `message` to the routee the strategy picks (or to the router, for its own messages)."""
        table = self._routing
        if table is None or message.__class__ in table.special or not self._cell.alive:
            self._tell_special(table, message)
            return
        # The hot path of a strategy that picks by turn alone (round robin): a
        # C-level counter and the mailbox append `ActorRef.tell` does, with no
        # Python call in between (each call is ~8% of a tell; measured on
        # pinned pooled tells: 1.52x -> see benchmarks/routing.py).
        cells = table.turn_cells
        if cells:
            cell = cells[table.turn() % len(cells)]  # type: ignore[misc]
            if cell.alive:
                cell.queue.append(message)
                if cell.sched.acquire(False):
                    cell.executor.submit(cell)
                return
        table.route_tell(message)

    def _tell_special(self, table: RoutingTable | None, message: Any) -> None:
        if table is None:
            cls = message.__class__
            for_router = cls in _PYKKA_CONTROL or cls in getattr(self._cell.actor_class, "management_messages", ())
            ActorRef.tell(self, message if for_router else _Route(message, None))
        elif table.special.get(message.__class__) == _BROADCAST and self._cell.alive:
            table.broadcast_tell(message.message)
        else:
            ActorRef.tell(self, message)

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        """Send `message` to the routee the strategy picks and wait for its reply (see `ActorRef.ask`).

        The reply comes straight from the routee. An error in getting the
        message to a routee (none able to take it, the router stopped) is
        set on the future, as in pykka.
        """
        future = _TrackedFuture()
        future._label = self  # type: ignore[assignment]  # noqa: SLF001 - formatted only on Timeout
        self._post_ask(message, future, inline=block and timeout is None)
        if block:
            return future.get(timeout=timeout)
        return future

    def _post_ask(self, message: Any, future: Future[Any], *, inline: bool) -> None:
        table = self._routing
        kind = None if table is None else table.special.get(message.__class__)
        try:
            if not self._cell.alive:
                self._dead(message)
            if table is None:
                if message.__class__ in _PYKKA_CONTROL:
                    super()._post_ask(message, future, inline=inline)
                else:
                    ActorRef.tell(self, _Route(message, future))
            elif kind is None:
                table.route_ask(message, future, inline)
            elif kind == _BROADCAST:
                gather(table, message.message, future)
            elif kind == _MANAGE:
                ActorRef.tell(self, _Managed(message, future))
            else:
                super()._post_ask(message, future, inline=inline)
        except (ActorDeadError, TroupeError):
            future.set_exception()

    @property
    def routing(self) -> RoutingTable | None:
        """The router's table (None while the router is being built)."""
        return self._routing


class Router(Actor):
    """An actor that forwards each message to routees chosen by a strategy (see the module docs).

    Args:
        routees: the initial routees: refs, or `AddRoutee` for routees that
            declare capabilities and a weight.
        strategy: a name from `STRATEGIES` or a `RoutingStrategy` instance
            (default ``"round_robin"``).
        rng: the random source for random choices (default: a fresh
            `random.Random()`; tests pass a seeded one).
        admission: per-routee limits (see `Admission`); `actors.Pool` sets them.

    Raises:
        StrategyError: unknown strategy name.
        TypeError: a routee that is not a troupe `ActorRef`.

    The router does not own its routees (Akka's "group"): stopping it leaves
    them running. It watches each routee (`Actor.watch`): one that terminates
    is removed from the table and subclasses hear of it in
    `on_routee_terminated`; one restarted in place by its supervisor stays.

    Threading: the management methods below run on the router's own thread
    (call them from its handlers, or send the messages); routing runs on
    senders' threads.
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = RouterRef

    management_messages: ClassVar[frozenset[type]] = frozenset({AddRoutee, RemoveRoutee, GetRoutees, GetStatistics})
    """Messages the router handles itself (in `on_management`) instead of routing. Extend it in subclasses."""

    def __init__(
        self,
        routees: Iterable[ActorRef[Any] | AddRoutee] = (),
        strategy: str | RoutingStrategy = "round_robin",
        *,
        rng: random.Random | None = None,
        admission: Admission | None = None,
    ) -> None:
        super().__init__()
        ref = self._troupe_cell.ref
        if not isinstance(ref, RouterRef):
            msg = f"{type(self).__name__} must be spawned with its RouterRef; do not override _troupe_ref_class"
            raise TypeError(msg)
        special = dict(_PYKKA_CONTROL)
        special.update(dict.fromkeys(type(self).management_messages, _MANAGE))
        self.routing = RoutingTable(
            ref,
            routing_strategy(strategy),
            rng=rng if rng is not None else random.Random(),
            admission=admission,
            special=special,
        )
        for spec in routees:
            self.add_routee(spec if isinstance(spec, AddRoutee) else AddRoutee(spec))
        ref._routing = self.routing  # noqa: SLF001 - from here on, senders route themselves

    # -- the actor ------------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        """Handle management messages; route anything else that reached the mailbox."""
        cls = message.__class__
        if cls is _Managed:
            self._manage(message.message, message.reply)
        elif cls is _Route:
            self.routing.route_here(message)
        elif cls is Terminated:
            self._routee_terminated(message)
        elif cls in type(self).management_messages:
            # Told (or asked past the RouterRef): an error fails the router, as any tell's.
            reply: Future[Any] = Future()
            self._manage(message, reply)
            return reply.get() if reply.done() else None
        else:
            self.routing.route_tell(message)
        return None

    def _manage(self, message: Any, reply: Future[Any]) -> None:
        try:
            handled = self.on_management(message, reply)
        except Exception:  # noqa: BLE001 - the error goes to whoever asked
            if not reply.done():
                reply.set_exception()
            return
        if not handled and not reply.done():
            msg = f"{type(self).__name__} lists {type(message).__name__} in management_messages but does not handle it"
            reply.set_exception((TypeError, TypeError(msg), None))

    def on_management(self, message: Any, reply: Future[Any]) -> bool:
        """Handle a management message, on the router's thread; return whether it was one.

        Set `reply` (now or later) to answer an ask; a told message's reply
        is dropped. Subclasses extend this and call ``super()``.
        """
        match message:
            case AddRoutee():
                self.add_routee(message)
                reply.set(None)
            case RemoveRoutee(ref=ref):
                reply.set(self.remove_routee(ref))
            case GetRoutees():
                reply.set(self.routee_refs())
            case GetStatistics():
                reply.set(self.statistics())
            case _:
                return False
        return True

    # -- management, on the router's thread -----------------------------------------------------------

    def add_routee(self, spec: AddRoutee | ActorRef[Any]) -> None:
        """Add a routee (or update what it declares). A routee that stops is removed."""
        if not isinstance(spec, AddRoutee):
            spec = AddRoutee(spec)
        if spec.ref is self._troupe_cell.ref:
            msg = f"{self} cannot be its own routee: every message would come back to it"
            raise ValueError(msg)
        known = self.routing.find(spec.ref) is not None
        self.routing.add(spec)
        if not known:
            self.watch(spec.ref)

    def remove_routee(self, ref: ActorRef[Any]) -> bool:
        """Remove a routee; return whether it was one. Messages already handed to it are not recalled."""
        if self.routing.remove(ref) is None:
            return False
        self.unwatch(ref)
        return True

    def routee_refs(self) -> tuple[ActorRef[Any], ...]:
        """Return the routees' refs, in table order."""
        return tuple(r.ref for r in self.routing.routees)

    def statistics(self) -> RouterStatistics:
        """Return a snapshot of the routees' load and the router's counters."""
        return self.routing.statistics()

    def _routee_terminated(self, message: Terminated) -> None:
        routee = self.routing.remove(message.ref)
        if routee is not None:
            with self.routing.lock:
                self.routing.dead_removed += 1
        self.on_routee_terminated(message)

    def on_routee_terminated(self, message: Terminated) -> None:
        """Called on the router's thread when a routee has terminated (it is out of the table by now).

        A routee restarted by its supervisor has not terminated and stays. Override to replace it.
        """
