"""Routing strategies: how a `Router` picks the routee(s) for each message.

Each strategy is a small class behind `RoutingStrategy`; subclass it and
implement `select` to add your own. `STRATEGIES` maps the built-in names to
their classes and `routing_strategy` turns a name into an instance.

Single-target strategies (one routee per message; what a `Pool` needs):
``round_robin``, ``random``, ``least_connections``, ``smallest_mailbox``,
``fastest_response``, ``weighted_capabilities``, ``consistent_hash``.
Fan-out strategies: ``broadcast``, ``scatter_gather_first``,
``tail_chopping`` (which needs an interval, so it has no plain name); the
state of their asks lives in `actors.routing.fanout`.

Thread contract: `select` runs on the threads of whoever sends through the
router, concurrently, so every built-in strategy is thread-safe: counters
are `itertools.count` (one C call per step), random draws come from the
router's one `random.Random`, and tables (the hash ring) are replaced, never
mutated. Load figures they read (`Routee.in_flight` and friends) may change
while they look; a choice is as good as the snapshot it saw.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import operator
from typing import TYPE_CHECKING, Any, ClassVar

from actors.errors import NoRouteeError, StrategyError, TroupeInternalError
from actors.routing.fanout import first_reply, gather, tail_chop
from actors.routing.messages import capability_set

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Hashable, Iterable, Sequence

    from actors._core import Future
    from actors.routing.table import Routee, RoutingTable

__all__ = [
    "STRATEGIES",
    "BroadcastRouting",
    "ConsistentHashRouting",
    "FastestResponseRouting",
    "LeastConnectionsRouting",
    "RandomRouting",
    "RoundRobinRouting",
    "RoutingStrategy",
    "ScatterGatherFirstRouting",
    "SmallestMailboxRouting",
    "TailChoppingRouting",
    "WeightedCapabilitiesRouting",
    "capability_set",
    "routing_strategy",
]


# -- strategies ----------------------------------------------------------------------------------------


class RoutingStrategy:
    """How a router picks routees. Subclass it and implement `select` to add your own.

    A strategy instance belongs to one router (it may keep counters or a
    hash ring); give each router its own.

    Thread contract: `select` runs on the threads of whoever sends through
    the router, concurrently; make it thread-safe or set `thread_safe` to
    False (the router then routes from its own thread, one message at a
    time, at the cost of a second mailbox hop). `routees_changed` runs with
    the table's lock held.
    """

    name: ClassVar[str] = "custom"
    """The name the strategy is known by (``STRATEGIES`` key for the built-in ones)."""

    thread_safe: ClassVar[bool] = True
    """Whether `select` may run on senders' threads concurrently."""

    single_target: ClassVar[bool] = True
    """Whether each message goes to exactly one routee chosen by `select` (pools require it)."""

    rng: random.Random
    """The router's random source, set when the strategy is attached."""

    router: str = "a router"
    """How errors name the router, set when the strategy is attached."""

    _table: RoutingTable | None = None

    def attach(self, table: RoutingTable) -> None:
        """Bind the strategy to its router's table (once). Override to set up state; call super."""
        if self._table is not None and self._table is not table:
            msg = (
                f"this {type(self).__name__} already routes for {self.router}; "
                "a strategy keeps per-router state: give each router its own instance"
            )
            raise StrategyError(msg)
        self._table = table
        self.rng = table.rng
        self.router = str(table.ref)

    def routees_changed(self, routees: tuple[Routee, ...]) -> None:
        """Called (lock held) with the new table whenever routees join or leave."""

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return the routee for `message`, from `routees` (never empty)."""
        raise NotImplementedError

    # How messages are sent. The defaults suit single-target strategies.

    turn: Callable[[], int] | None = None
    """For a strategy that picks by turn alone: a callable (ideally C-level, such as
    ``itertools.count().__next__``) whose result modulo the number of routees is the
    routee for the next tell. Routers then route plain tells without calling `select`."""

    def route_tell(self, table: RoutingTable, message: Any) -> None:
        """Send `message` (a tell) to the routee(s) it goes to."""
        while True:
            routees = table.routees
            if not routees:
                raise table.no_routee(message)
            routee = self.select(message, routees)
            if routee.cell.alive and table.send_tell(routee, message):
                return
            table.drop_dead()

    def route_ask(self, table: RoutingTable, message: Any, future: Future[Any], inline: bool) -> None:
        """Send `message` as an ask whose reply goes into `future`."""
        while True:
            routees = table.routees
            if not routees:
                raise table.no_routee(message)
            routee = self.select(message, routees)
            if routee.cell.alive:
                table.send_ask(routee, message, future, inline=inline)
                return
            table.drop_dead()


class RoundRobinRouting(RoutingStrategy):
    """Each routee in turn. Over ``k * n`` messages to a stable set of n routees, each gets exactly k."""

    name = "round_robin"

    def __init__(self) -> None:
        # itertools.count's __next__ is one C call: atomic, so senders on any
        # thread never skip or repeat a number.
        self._next = itertools.count()
        # The C-level counter routers use on their hot path (see `RoutingStrategy.turn`).
        self.turn = self._next.__next__

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return the next routee in turn."""
        return routees[next(self._next) % len(routees)]


class RandomRouting(RoutingStrategy):
    """A routee drawn uniformly at random from the router's `random.Random`."""

    name = "random"

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return a routee drawn uniformly."""
        return routees[self.rng.randrange(len(routees))]


class LeastConnectionsRouting(RoutingStrategy):
    """The routee with the fewest messages in flight; ties go round in turn.

    Without `Admission` limits only asks are counted, so a router that is
    only told messages spreads them round robin.
    """

    name = "least_connections"

    def __init__(self) -> None:
        self._rotation = itertools.count()

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return a routee with the fewest messages in flight."""
        return _least(routees, next(self._rotation), _IN_FLIGHT)


class SmallestMailboxRouting(RoutingStrategy):
    """The routee with the fewest messages waiting (plus one if it is busy); ties go round in turn."""

    name = "smallest_mailbox"

    def __init__(self) -> None:
        self._rotation = itertools.count()

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return a routee with the smallest mailbox."""
        return _least(routees, next(self._rotation), _MAILBOX_SIZE)


_IN_FLIGHT = operator.attrgetter("in_flight")
_MAILBOX_SIZE = operator.attrgetter("mailbox_size")


def _least(routees: Sequence[Routee], turn: int, load: Callable[[Routee], int]) -> Routee:
    """Return the routee with the smallest `load`, scanning from ``turn % n`` so ties go round.

    Stops at the first routee with no load at all.
    """
    n = len(routees)
    start = turn % n
    best = routees[start]
    best_load = load(best)
    for i in range(1, n):
        if best_load == 0:
            break
        routee = routees[(start + i) % n]
        current = load(routee)
        if current < best_load:
            best, best_load = routee, current
    return best


class FastestResponseRouting(RoutingStrategy):
    """The routee with the lowest moving average of response time.

    A routee with no reply yet counts as 0 s, so each is tried early. A
    routee whose oldest message in flight has already waited longer than its
    average counts that wait instead, so one that hangs stops being chosen.
    Ties (all untried, say) go to the one with fewer in flight, then round
    in turn.
    """

    name = "fastest_response"

    def __init__(self) -> None:
        self._rotation = itertools.count()

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return the routee expected to answer soonest."""
        table = self._table
        if table is None:
            msg = f"{self.name} selected a routee before it was attached to a table"
            raise TroupeInternalError(msg)
        now = table.clock.now()
        n = len(routees)
        start = next(self._rotation) % n
        best: Routee | None = None
        best_key = (math.inf, 0)
        for i in range(n):
            routee = routees[(start + i) % n]
            average = routee.average_response_time or 0.0
            oldest = routee.oldest_start
            if oldest is not None and now - oldest > average:
                average = now - oldest
            key = (average, routee.in_flight)
            if key < best_key:
                best, best_key = routee, key
        if best is None:  # every key is below (inf, 0), and `routees` is never empty here
            msg = f"{self.name}: no routee chosen from {len(routees)} routees"
            raise TroupeInternalError(msg)
        return best


def _required_capabilities(message: Any) -> frozenset[str]:
    """Read ``message.required_capabilities`` (none when absent): the default requirement."""
    required = getattr(message, "required_capabilities", None)
    if not required:
        return frozenset()
    return capability_set(required)


class WeightedCapabilitiesRouting(RoutingStrategy):
    """Among routees having every capability a message requires, one drawn in proportion to weight.

    Args:
        requires: returns the capabilities a message needs (default: its
            ``required_capabilities`` attribute, none if absent).

    Raises (on routing):
        NoRouteeError: no routee has them all; the error lists what each offers.
    """

    name = "weighted_capabilities"

    def __init__(self, requires: Callable[[Any], Iterable[str]] = _required_capabilities) -> None:
        self.requires = requires

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return a capable routee, drawn in proportion to weight."""
        required = self.requires(message)
        if required:
            required = capability_set(required)
            capable = [r for r in routees if required <= r.capabilities]
            if not capable:
                raise self._unable(message, required, routees)
        else:
            capable = list(routees)
        if len(capable) == 1:
            return capable[0]
        return self.rng.choices(capable, [r.weight for r in capable])[0]

    def _unable(self, message: Any, required: frozenset[str], routees: Sequence[Routee]) -> NoRouteeError:
        offers = "; ".join(f"{r.ref}: {sorted(r.capabilities)}" for r in routees)
        msg = (
            f"no routee of {self.router} has every capability {sorted(required)} that {type(message).__name__} "
            f"requires; routees offer {offers}. Add a routee that has them "
            "(AddRoutee(ref, capabilities=...)) or require less"
        )
        return NoRouteeError(msg)


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _key_bytes(key: Any) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, int):
        return str(key).encode()
    return repr(key).encode()


def _hash_key(message: Any) -> Hashable:
    """Read ``message.hash_key``, or use the message itself: the default key function."""
    key: Hashable = getattr(message, "hash_key", message)
    return key


class ConsistentHashRouting(RoutingStrategy):
    """The routee that owns a message's key on a hash ring: one key, one routee, while the set is stable.

    Each routee owns `virtual_nodes` points on a 64-bit ring (BLAKE2b of its
    URN and the point's number); a key goes to the owner of the first point
    at or after its hash. When one routee joins or leaves, only the keys of
    the ring segments it gains or loses move: about 1/n of them.

    Keys should be str, bytes or int (hashed by value); other keys are
    hashed by ``repr``. When `select` is given only part of the routees (a
    pool's routees under their limit), the key goes to the next routee
    along the ring that is among them.

    Args:
        key: returns a message's key (default: ``message.hash_key``, or the
            message itself).
        virtual_nodes: points per routee; more evens out the shares.
    """

    name = "consistent_hash"

    def __init__(self, key: Callable[[Any], Any] = _hash_key, *, virtual_nodes: int = 160) -> None:
        if virtual_nodes < 1:
            msg = f"virtual_nodes must be >= 1, got {virtual_nodes}"
            raise ValueError(msg)
        self.key = key
        self.virtual_nodes = virtual_nodes
        # Invariant: (points sorted, owner of each point, the routees tuple it was built from); replaced whole.
        self._ring: tuple[list[int], list[Routee], tuple[Routee, ...]] = ([], [], ())
        self._points: dict[str, list[int]] = {}

    def routees_changed(self, routees: tuple[Routee, ...]) -> None:
        """Rebuild the ring (a routee's points are computed once and cached)."""
        cache = {r.key: self._points.get(r.key) or self._points_of(r.key) for r in routees}
        self._points = cache
        pairs = sorted((point, i) for i, r in enumerate(routees) for point in cache[r.key])
        self._ring = ([p for p, _ in pairs], [routees[i] for _, i in pairs], routees)

    def _points_of(self, key: str) -> list[int]:
        return [_hash64(f"{key}#{i}".encode()) for i in range(self.virtual_nodes)]

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return the owner of the message's key (or the next one along the ring among `routees`)."""
        points, owners, ring_routees = self._ring
        if not points:
            return routees[0]
        h = _hash64(_key_bytes(self.key(message)))
        i = bisect.bisect_left(points, h)
        if routees is ring_routees:
            return owners[i % len(points)]
        allowed = {id(r) for r in routees}
        for step in range(len(points)):
            owner = owners[(i + step) % len(points)]
            if id(owner) in allowed:
                return owner
        return routees[0]  # none of `routees` is on the ring (it is being rebuilt)


class BroadcastRouting(RoutingStrategy):
    """Every message to every routee. Asked, the reply is the tuple of all replies, in table order."""

    name = "broadcast"
    single_target = False

    def route_tell(self, table: RoutingTable, message: Any) -> None:
        """Tell every live routee."""
        table.broadcast_tell(message)

    def route_ask(self, table: RoutingTable, message: Any, future: Future[Any], inline: bool) -> None:
        """Ask every live routee; the reply is the tuple of their replies."""
        gather(table, message, future)


class ScatterGatherFirstRouting(RoutingStrategy):
    """Ask every routee; the first successful reply wins and later ones are dropped.

    If every routee fails, the ask fails with the first failure. With
    `within`, an ask still unanswered after that many seconds of the
    system's clock fails with `pykka.Timeout`. A tell goes to every routee
    (there is no reply to pick), as Akka does.
    """

    name = "scatter_gather_first"
    single_target = False

    def __init__(self, within: float | None = None) -> None:
        if within is not None and within <= 0:
            msg = f"within must be None or > 0 seconds, got {within!r}"
            raise ValueError(msg)
        self.within = within

    def route_tell(self, table: RoutingTable, message: Any) -> None:
        """Tell every live routee."""
        table.broadcast_tell(message)

    def route_ask(self, table: RoutingTable, message: Any, future: Future[Any], inline: bool) -> None:
        """Ask every live routee; the first success answers."""
        first_reply(table, message, future, self.within)


class TailChoppingRouting(RoutingStrategy):
    """Ask one routee; if no reply comes within `interval`, ask the next too; the first success wins.

    Routees are tried in an order shuffled by the router's `random.Random`.
    A failure moves on to the next routee at once. With `within`, an ask
    still unanswered after that many seconds fails with `pykka.Timeout`;
    without it, once every routee has been asked the ask waits for the
    first reply, and fails with the first failure if all fail. Times are
    seconds of the system's clock. A tell goes to one random routee.
    """

    name = "tail_chopping"
    single_target = False

    def __init__(self, interval: float, within: float | None = None) -> None:
        if interval <= 0:
            msg = f"interval must be > 0 seconds, got {interval!r}"
            raise ValueError(msg)
        if within is not None and within <= 0:
            msg = f"within must be None or > 0 seconds, got {within!r}"
            raise ValueError(msg)
        self.interval = interval
        self.within = within

    def select(self, message: Any, routees: Sequence[Routee]) -> Routee:
        """Return a random routee (where a tell goes)."""
        return routees[self.rng.randrange(len(routees))]

    def route_ask(self, table: RoutingTable, message: Any, future: Future[Any], inline: bool) -> None:
        """Ask routees one after another, `interval` apart, until one answers."""
        routees = table.live_routees()
        if not routees:
            raise table.no_routee(message)
        order = self.rng.sample(routees, len(routees))
        tail_chop(table, message, future, order, interval=self.interval, within=self.within)


STRATEGIES: dict[str, type[RoutingStrategy]] = {
    cls.name: cls
    for cls in (
        RoundRobinRouting,
        RandomRouting,
        LeastConnectionsRouting,
        SmallestMailboxRouting,
        FastestResponseRouting,
        WeightedCapabilitiesRouting,
        ConsistentHashRouting,
        BroadcastRouting,
        ScatterGatherFirstRouting,
    )
}
"""Strategy name -> class, for the strategies that need no arguments (``tail_chopping`` does)."""


def routing_strategy(strategy: str | RoutingStrategy) -> RoutingStrategy:
    """Return `strategy` itself, or a new instance of the strategy with that name.

    Raises:
        StrategyError: an unknown name, or a name whose strategy needs
            arguments (build the instance yourself).
        TypeError: neither a name nor a `RoutingStrategy`.
    """
    if isinstance(strategy, RoutingStrategy):
        return strategy
    if isinstance(strategy, str):
        cls = STRATEGIES.get(strategy)
        if cls is not None:
            return cls()
        if strategy == TailChoppingRouting.name:
            msg = "tail_chopping needs an interval: pass TailChoppingRouting(interval=..., within=...)"
            raise StrategyError(msg)
        msg = (
            f"unknown routing strategy {strategy!r}; choose one of {sorted([*STRATEGIES, 'tail_chopping'])} "
            "or pass a RoutingStrategy instance"
        )
        raise StrategyError(msg)
    msg = f"a routing strategy is a name such as 'round_robin' or a RoutingStrategy instance, got {strategy!r}"
    raise TypeError(msg)
