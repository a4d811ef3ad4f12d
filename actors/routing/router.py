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

import random
from typing import TYPE_CHECKING, Any, ClassVar

from actors._core import Actor, ActorRef, Future, Terminated
from actors.errors import RoutingRequestError, TroupeError
from actors.routing.messages import AddRoutee, GetRoutees, GetStatistics, RemoveRoutee, _Managed, _Route
from actors.routing.ref import _MANAGE, _PYKKA_CONTROL, RouterRef
from actors.routing.strategies import RoutingStrategy, routing_strategy
from actors.routing.table import RoutingTable

if TYPE_CHECKING:
    from collections.abc import Iterable

    from actors.routing.admission import Admission
    from actors.routing.messages import RouterStatistics

__all__ = ["Router"]


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

    refusals: ClassVar[tuple[type[BaseException], ...]] = (TroupeError,)
    """A shared service: a told management message it refuses is a ``REJECTED`` dead letter (README)."""

    def __init__(
        self,
        routees: Iterable[ActorRef[Any] | AddRoutee] = (),
        strategy: str | RoutingStrategy = "round_robin",
        *,
        rng: random.Random | None = None,
        admission: Admission | None = None,
    ) -> None:
        super().__init__()
        ref = self.actor_ref
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
            # Told (or asked past the RouterRef): what it refuses is a REJECTED dead letter (`refusals`).
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
        if spec.ref is self.actor_ref:
            msg = f"{self} cannot be its own routee: every message would come back to it"
            raise RoutingRequestError(msg)
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
        self.routing.remove(message.ref, terminated=True)
        self.on_routee_terminated(message)

    def on_routee_terminated(self, message: Terminated) -> None:
        """Called on the router's thread when a routee has terminated (it is out of the table by now).

        A routee restarted by its supervisor has not terminated and stays. Override to replace it.
        """
