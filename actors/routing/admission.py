"""Admission: the limits a `Pool` puts on its router, and the control that keeps them.

`Admission` is the frozen configuration (how many messages a routee may have
in flight, how many may wait, how far the router may grow). `AdmissionControl`
is its state, one per `RoutingTable` with limits: the messages waiting for
room, the routees being grown, whether the router still takes work, and the
counters. It decides, for each message, which routee takes it, whether it
waits or is refused, and when to ask for one more routee.

Thread contract: `tell` and `ask` run on senders' threads, `finished` on the
thread that settles a reply (usually the routee's), the rest on the owner's
thread (the pool actor's); all may run at once. Every field below is guarded
by the table's lock (shared: choosing a routee reads the membership it
guards) and written only by this class's methods. Callbacks (`Admission.grow`,
`on_idle`) and hand-offs to routees run with no lock held; `Admission.exhausted`
runs with the lock held and must only read.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, cast

import attrs
from pykka import ActorDeadError

from actors._core import CURRENT_TRACE, DeadLetterReason, Future, Receipt
from actors.errors import NoRouteeError, TroupeError

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.routing.table import Routee, RoutingTable

__all__ = ["Admission", "AdmissionControl", "AdmissionCounts"]


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
            `RoutingTable.add` with ``grown=True``, or
            `AdmissionControl.growth_failed`. While routees are being grown,
            as many messages as they will have room for wait for them.
        exhausted: builds the error a refused message gets.
    """

    max_concurrent: int
    queue_capacity: int = 0
    max_size: int | None = None
    grow: Callable[[], None] | None = None
    exhausted: Callable[[], BaseException] | None = None


@attrs.frozen
class AdmissionCounts:
    """The admission counters at one moment (read together, under the table's lock).

    Attributes:
        waiting: messages waiting for room.
        refused: messages refused because no routee had room and none could wait.
        admitted_at_once: messages that found a routee with room at once.
        admitted_after_wait: messages handed to a routee after waiting.
    """

    waiting: int
    refused: int
    admitted_at_once: int
    admitted_after_wait: int


_Waiting = tuple[Any, Future[Any], bool, tuple[str, str, bool] | None]
"""A message waiting for room: (message, reply future or receipt, is it a tell, the trace it was sent in).

The trace context (`actors.observability` tracing; None when off) goes with
it, so the routee handles it in the sender's trace, not in that of whichever
handler happens to hand it out.
"""


class AdmissionControl:
    """Where each message goes under `Admission` limits: a routee with room, the waiting queue, or a refusal.

    Args:
        table: the table it decides for; it shares the table's lock.
        limits: the limits it keeps.
        receipt: builds a tell's receipt the table can track (the table's
            own class: one call per tell, no method in between).
    """

    __slots__ = (
        "_admitted_after_wait",
        "_admitted_at_once",
        "_closed",
        "_growing",
        "_on_idle",
        "_pending",
        "_receipt",
        "_refused",
        "limits",
        "lock",
        "table",
    )

    def __init__(self, table: RoutingTable, limits: Admission, receipt: Callable[[], Receipt[Any]]) -> None:
        self.table = table
        self.limits = limits
        self.lock = table.lock
        self._receipt = receipt
        # Invariant: the messages waiting for room, oldest first; none waits
        # while a routee has room (a sender that appends looks again, and a
        # finishing routee frees its slot before it looks here).
        self._pending: deque[_Waiting] = deque()
        # Invariant: routees asked for (grow called or reserved) and not yet
        # added or failed; never negative.
        self._growing = 0
        # Set once the router drains or stops: no new work is taken.
        self._closed = False
        # Called (on whichever thread finished the last message) when nothing is in flight or waiting.
        self._on_idle: Callable[[], None] | None = None
        self._admitted_at_once = 0
        self._admitted_after_wait = 0
        self._refused = 0

    # -- what the owner reads --------------------------------------------------------------------------

    @property
    def growing(self) -> int:
        """Routees being grown (asked for, not yet added or failed)."""
        return self._growing

    @property
    def waiting(self) -> int:
        """Messages waiting for room."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        """Whether the router has stopped taking work."""
        return self._closed

    def counts(self) -> AdmissionCounts:
        """Return the counters, read together."""
        with self.lock:
            return AdmissionCounts(
                waiting=len(self._pending),
                refused=self._refused,
                admitted_at_once=self._admitted_at_once,
                admitted_after_wait=self._admitted_after_wait,
            )

    def busy(self) -> bool:
        """Whether any message is in flight or waiting."""
        return bool(self._pending) or any(r.started for r in self.table.routees)

    # -- entry points (the table binds its route_tell / route_ask to these) -----------------------------

    def tell(self, message: Any) -> None:
        """Admit a tell (it carries a receipt, so it counts in flight until handled)."""
        self._admit(message, self._receipt(), is_tell=True)

    def ask(self, message: Any, future: Future[Any], inline: bool) -> None:
        """Admit an ask whose reply goes into `future`."""
        self._admit(message, future, is_tell=False, inline=inline)

    def _admit(self, message: Any, future: Future[Any], *, is_tell: bool, inline: bool = False) -> None:
        limits = self.limits
        table = self.table
        grow = False
        routee: Routee | None = None
        refused: BaseException | None = None
        with self.lock:
            if self._closed:
                refused = ActorDeadError(f"{table.ref} is draining for shutdown and takes no new work")
            else:
                # Behind messages already waiting, a message waits too (order is kept).
                routee = None if self._pending else self._choose(message)
                if routee is not None:
                    self._admitted_at_once += 1
                    future = table.track(routee, future, table.clock.now())
                else:
                    grow, waits = self._saturated()
                    if waits:
                        self._pending.append((message, future, is_tell, CURRENT_TRACE.get()))
                    else:
                        self._refused += 1
                        refused = (limits.exhausted or self._exhausted)()
        if grow and limits.grow is not None:
            limits.grow()
        if refused is not None:
            if is_tell:
                raise refused
            future.set_exception((type(refused), refused, None))
        elif routee is not None:
            self._deliver(routee, message, future, is_tell, inline=inline)
        else:
            # It waits. Room may have appeared since we looked (a routee that
            # finished before we appended found nothing waiting): look again.
            # A finishing routee frees its slot before it looks at `_pending`,
            # so either it sees this message or we see its room. Looking needs
            # no lock; the lock is taken only if there is room to hand out.
            limit = limits.max_concurrent
            if any(len(r.started) < limit for r in table.routees):
                self.drain_pending()

    def _choose(self, message: Any) -> Routee | None:
        # Called with `lock` held: a routee with room, by the strategy, or None.
        # Raises NoRouteeError only if no routee could take the message even
        # with room (weighted_capabilities: none has the capabilities).
        limit = self.limits.max_concurrent
        strategy = self.table.strategy
        routees = self.table.routees
        eligible = [r for r in routees if len(r.started) < limit and r.cell.alive]
        if len(eligible) == len(routees):
            return strategy.select(message, routees) if routees else None
        try:
            return strategy.select(message, eligible) if eligible else None
        except NoRouteeError:
            strategy.select(message, routees)  # raises if none could, busy or not
            return None

    def _saturated(self) -> tuple[bool, bool]:
        # Called with `lock` held: (ask for one more routee?, may this message wait?).
        limits = self.limits
        waiting = len(self._pending)
        room_coming = self._growing * limits.max_concurrent
        grow = False
        if waiting >= room_coming and limits.max_size is not None:
            size = sum(1 for r in self.table.routees if r.cell.alive) + self._growing
            if size < limits.max_size:
                self._growing += 1
                room_coming += limits.max_concurrent
                grow = True
        return grow, waiting < room_coming + limits.queue_capacity

    def drain_pending(self) -> None:
        """Hand waiting messages, oldest first, to routees with room; refuse those none could take."""
        if not self._pending:
            return
        table = self.table
        ready: list[tuple[Routee, Any, Future[Any], bool, tuple[str, str, bool] | None]] = []
        unable: list[tuple[Any, Future[Any], bool, BaseException]] = []
        with self.lock:
            now = table.clock.now()
            pending = self._pending
            while pending:
                message, future, is_tell, trace = pending[0]
                try:
                    routee = self._choose(message)
                except NoRouteeError as exc:
                    pending.popleft()
                    unable.append((message, future, is_tell, exc))
                    continue
                if routee is None:
                    break
                pending.popleft()
                self._admitted_after_wait += 1
                ready.append((routee, message, table.track(routee, future, now), is_tell, trace))
        for message, future, is_tell, error in unable:
            self._reject(message, future, is_tell, error)
        for routee, message, future, is_tell, trace in ready:
            if trace is None:
                self._deliver(routee, message, future, is_tell)
            else:
                token = CURRENT_TRACE.set(trace)  # sent in the trace it waited in
                try:
                    self._deliver(routee, message, future, is_tell)
                finally:
                    CURRENT_TRACE.reset(token)

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

    def _reject(self, message: Any, future: Future[Any], is_tell: bool, error: BaseException) -> None:
        # Refuse a message that waited: an ask gets `error`; a tell becomes a dead letter.
        table = self.table
        if is_tell:
            table.dead_letters.record(message, table.ref, DeadLetterReason.RECIPIENT_STOPPED, error)
        if not future.done():
            future.set_exception((type(error), error, None))

    def _exhausted(self) -> BaseException:
        msg = (
            f"every routee of {self.table.ref} has {self.limits.max_concurrent} messages in flight and "
            f"{len(self._pending)} wait; retry later or raise its limits"
        )
        return NoRouteeError(msg)

    def finished(self) -> None:
        """Called by the table once a message in flight has settled its routee's load (never raises)."""
        if self._pending:
            # Room just appeared: hand it to whatever waits. A sender that saw
            # no room appends under the lock and then looks again (see
            # `_admit`), so a message never waits with room free.
            self.drain_pending()
        on_idle = self._on_idle
        if on_idle is not None and not self.busy():
            on_idle()

    # -- growing ------------------------------------------------------------------------------------------

    def reserve(self, count: int = 1) -> None:
        """Count `count` routees the owner is about to grow, so messages wait for them instead of asking for more."""
        with self.lock:
            self._growing += count

    def arrived(self) -> None:
        """Count one grown routee as arrived (the table calls it, lock held, as the routee joins)."""
        self._growing = max(0, self._growing - 1)

    def growth_failed(self, error: BaseException) -> None:
        """Answer an `Admission.grow` call (or a `reserve`) that produced no routee.

        If no routee is left to take them, the messages waiting for room get
        `error` (asks) or become dead letters (tells).
        """
        with self.lock:
            self._growing = max(0, self._growing - 1)
            stranded: list[_Waiting] = []
            if not self._growing and not any(r.cell.alive for r in self.table.routees):
                stranded = list(self._pending)
                self._pending.clear()
        for message, future, is_tell, _trace in stranded:
            self._reject(message, future, is_tell, error)

    # -- closing ------------------------------------------------------------------------------------------

    def drain(self, on_idle: Callable[[], None]) -> None:
        """Take no new work from now on; call `on_idle` each time nothing is left in flight or waiting.

        `on_idle` runs on the thread that finished the last message, with no
        lock held; it is not called for a router idle already (check `busy`).
        """
        with self.lock:
            self._closed = True
            self._on_idle = on_idle

    def close(self, error: BaseException) -> int:
        """Take no new work from now on, and refuse what still waits with `error`; return how many waited.

        A waiting ask gets `error`; a waiting tell becomes a dead letter.
        """
        with self.lock:
            self._closed = True
            waiting = list(self._pending)
            self._pending.clear()
        for message, future, is_tell, _trace in waiting:
            self._reject(message, future, is_tell, error)
        return len(waiting)
