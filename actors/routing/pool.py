"""`Pool`: a router that owns its routees, sizes itself, and measures them.

    pool = system.spawn(Pool, ChildSpec(Agent, args=("gpt",)), config=PoolConfig(min_size=2, max_size=8))
    pool.ask(task)                       # to a routee with room, by the strategy
    pool.ask(GetStatistics())            # PoolStatistics: sizes, counters, per-routee load
    pool.ask(Drain(timeout=30.0))        # finish the work taken, then stop routees and pool

The features the agent pool of the Rust crate behind this design offers, as
an actor (its ``PoolConfig`` fields map one to one):

- Routees are spawned from a factory (a `ChildSpec`, or an actor class) as
  the pool's children, so the pool is their supervisor: one that fails is
  restarted in place by ``config.supervision`` (its address and queued mail
  survive, so the pool keeps routing to it), and the ask whose handler
  failed gets the error, as any ask's handler error does. If routees fail
  faster than that policy's restart intensity allows, the pool gives up as
  any supervisor does: it fails, with its routees.
- Warm-up: ``min_size`` routees are created at start (``warm_up``), else on
  first demand. A routee counts once it has started (its ``on_start``
  returned), within ``creation_timeout`` seconds.
- Admission: each routee takes at most ``max_concurrent`` messages at once
  (tells and asks: an actor handles one at a time, the rest wait in its
  mailbox). When every routee is full the pool grows by one, up to
  ``max_size``, and the message waits for the new routee; at ``max_size`` it
  waits in the pool's queue (``overflow="queue"``, up to ``queue_capacity``)
  or is refused with `PoolExhaustedError` (``overflow="fail"``). Waiting
  messages go out oldest first, as room appears.
- Maintenance, every ``maintenance_interval`` seconds: routees idle for
  ``max_idle`` are stopped (never below ``min_size``), and the `Resizer`, if
  any, grows or shrinks the pool on the pressure it measures.
- Statistics: `GetStatistics` (or ``statistics()`` through a proxy) returns a
  frozen `PoolStatistics`; a routee's load is a `RouteeStatistics`.
- Graceful shutdown: `Drain` stops the pool taking work, lets what it took
  finish (in flight and waiting) within a timeout, then stops the routees
  and the pool. ``ref.stop()`` stops at once, as for any actor.

Every time above is seconds of the system's clock: tests drive the pool with
a `ManualClock`. Messages are routed on the sender's thread, as for any
`Router`; the pool actor itself only creates, retires and counts routees.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, Literal

import attrs
from pykka import ActorDeadError
from pykka.messages import ProxyGetAttr

from actors._core import ChildSpec, Future, SupervisionPolicy, Terminated
from actors.errors import (
    PoolExhaustedError,
    RouteeStartError,
    RoutingRequestError,
    StrategyError,
    TroupeInternalError,
)
from actors.routing.admission import Admission, AdmissionControl
from actors.routing.messages import AddRoutee, RemoveRoutee, RouteeStatistics, RouterStatistics, _routee_tuple
from actors.routing.router import Router
from actors.routing.strategies import RoutingStrategy, routing_strategy

if TYPE_CHECKING:
    import random

    import pykka

    from actors._core import ActorRef

__all__ = ["AwaitStarted", "Drain", "DrainResult", "Pool", "PoolConfig", "PoolStatistics", "Resizer"]


# -- configuration -------------------------------------------------------------------------------------


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0):
        msg = f"{attribute.name} must be > 0, got {value!r}"
        raise ValueError(msg)


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 1:
        msg = f"{attribute.name} must be between 0 and 1, got {value!r}"
        raise ValueError(msg)


def _count(minimum: int) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            msg = f"{attribute.name} must be an int >= {minimum}, got {value!r}"
            raise ValueError(msg)

    return check


@attrs.frozen
class Resizer:
    """Grow or shrink a pool on measured pressure (Akka's ``DefaultResizer``), at each maintenance tick.

    A routee is busy when it has at least `pressure_threshold` messages in
    flight. When every routee is busy the pool grows by
    ``ceil(rampup_rate * size)``; when fewer than `backoff_threshold` of them
    are, it shrinks by ``ceil(backoff_rate * size)`` (idle routees first).
    The pool's ``min_size`` and ``max_size`` bound the result.

    Args:
        pressure_threshold: messages in flight that make a routee busy (>= 1).
        rampup_rate: fraction to grow by when all are busy (0: never grow).
        backoff_threshold: busy fraction under which to shrink (0: never).
        backoff_rate: fraction to shrink by.
    """

    pressure_threshold: int = attrs.field(default=1, validator=_count(1))
    rampup_rate: float = attrs.field(default=0.2, validator=attrs.validators.ge(0))
    backoff_threshold: float = attrs.field(default=0.3, validator=_fraction)
    backoff_rate: float = attrs.field(default=0.1, validator=_fraction)

    def capacity_change(self, size: int, busy: int) -> int:
        """Return how many routees to add (> 0) or remove (< 0) for `busy` busy routees out of `size`."""
        if size <= 0:
            return 0
        if busy >= size:
            return math.ceil(self.rampup_rate * size)
        if self.backoff_threshold > 0 and self.backoff_rate > 0 and busy / size < self.backoff_threshold:
            return -math.ceil(self.backoff_rate * size)
        return 0


def _check_strategy(_: object, __: attrs.Attribute[Any], value: str | RoutingStrategy) -> None:
    strategy = routing_strategy(value) if isinstance(value, str) else value
    if not isinstance(strategy, RoutingStrategy):
        msg = f"strategy must be a routing strategy name or a RoutingStrategy, got {value!r}"
        raise TypeError(msg)
    if not strategy.single_target:
        msg = (
            f"a pool needs a strategy that picks one routee per message; {strategy.name!r} fans out. "
            "Send Broadcast(message) to reach every routee, or use a Router over the pool's routees"
        )
        raise StrategyError(msg)


def _default_supervision() -> SupervisionPolicy:
    # Ten routee restarts a minute before the pool gives up: a pool of a few
    # routees survives an occasional crash of each, and a crash loop escalates.
    return SupervisionPolicy(max_restarts=10, within_seconds=60.0)


@attrs.frozen
class PoolConfig:
    """How a `Pool` sizes, limits and measures its routees. Validated when built.

    Args:
        min_size: routees the pool keeps: created at start with `warm_up`,
            never evicted or resized below, replaced when one terminates.
        max_size: routees the pool may grow to (>= min_size, >= 1).
        warm_up: create `min_size` routees at start (else on first demand).
        max_idle: seconds a routee with nothing in flight may stay idle
            before it is stopped (None: never).
        maintenance_interval: seconds between maintenance ticks (eviction, resizer).
        max_concurrent: messages a routee may have in flight at once.
        creation_timeout: seconds a new routee has to start.
        strategy: how a routee is picked among those with room: a name
            (default ``"least_connections"``) or a `RoutingStrategy` that picks
            one routee (an instance serves one pool only).
        overflow: when every routee is full at `max_size`: ``"fail"`` raises
            `PoolExhaustedError`, ``"queue"`` lets the message wait.
        queue_capacity: messages that may wait with ``overflow="queue"``.
        resizer: grows or shrinks on measured pressure (None: only on demand
            and by idle eviction).
        supervision: how the pool supervises its routees (default: restart
            them, up to 10 restarts a minute).
    """

    min_size: int = attrs.field(default=1, validator=_count(0))
    max_size: int = attrs.field(default=10, validator=_count(1))
    warm_up: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    max_idle: float | None = attrs.field(default=300.0, validator=_positive)
    maintenance_interval: float = attrs.field(default=60.0, validator=_positive)
    max_concurrent: int = attrs.field(default=1, validator=_count(1))
    creation_timeout: float = attrs.field(default=30.0, validator=_positive)
    strategy: str | RoutingStrategy = attrs.field(default="least_connections", validator=_check_strategy)
    overflow: Literal["fail", "queue"] = attrs.field(default="fail", validator=attrs.validators.in_(("fail", "queue")))
    queue_capacity: int = attrs.field(default=1000, validator=_count(0))
    resizer: Resizer | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Resizer))
    )
    supervision: SupervisionPolicy = attrs.field(
        factory=_default_supervision, validator=attrs.validators.instance_of(SupervisionPolicy)
    )

    def __attrs_post_init__(self) -> None:
        if self.max_size < self.min_size:
            msg = f"PoolConfig max_size ({self.max_size}) must be >= min_size ({self.min_size})"
            raise ValueError(msg)


# -- messages ------------------------------------------------------------------------------------------


@attrs.frozen
class Drain:
    """Shut a pool down gracefully: take no new work, finish what it took within `timeout`, then stop.

    New messages are refused at once with `ActorDeadError`. Messages in
    flight and waiting in the pool get `timeout` seconds (of the system's
    clock) to finish; then the routees and the pool stop, and the ask is
    answered with a `DrainResult` once they have.
    """

    timeout: float = attrs.field(default=30.0, validator=_positive)


@attrs.frozen
class DrainResult:
    """How a `Drain` ended.

    Attributes:
        drained: whether everything finished before the timeout.
        abandoned: messages still in flight or waiting when the timeout came.
    """

    drained: bool
    abandoned: int


@attrs.frozen
class AwaitStarted:
    """Ask a pool to reply, with its `PoolStatistics`, once no routee is being created.

    Right after spawning a pool with ``warm_up``, this waits for the warm-up.
    """


@attrs.frozen
class PoolStatistics(RouterStatistics):
    """A pool's state at one moment: a `RouterStatistics` with the pool's sizes and counters.

    Attributes:
        strategy, dead_routees_removed, average_response_time: as for any
            router (see `RouterStatistics`).
        size: routees taking work now.
        starting: routees being created.
        busy: routees with messages in flight.
        waiting: messages waiting in the pool for room.
        min_size, max_size, max_concurrent: the limits it runs under.
        created: routees created (started) so far.
        destroyed: routees gone so far (evicted, shrunk, failed for good).
        failed_creations: routees that did not start.
        processed: messages finished (replies and handled tells).
        failed: of which failures.
        refused: messages refused with `PoolExhaustedError`.
        average_operation_time: mean seconds (system clock) from hand-off to
            reply (the same as `average_response_time`).
        hit_rate: fraction of messages that found a routee with room at once
            (1.0 before any).
        routees: each routee's load.
    """

    size: int
    starting: int
    busy: int
    waiting: int
    min_size: int
    max_size: int
    max_concurrent: int
    created: int
    destroyed: int
    failed_creations: int
    processed: int
    failed: int
    refused: int
    average_operation_time: float
    hit_rate: float
    # Redeclared (as are waiting, processed, failed: same types) so the pool's
    # fields read in one place; attrs keeps one field of each name.
    routees: tuple[RouteeStatistics, ...] = attrs.field(converter=_routee_tuple)


@attrs.frozen
class _Grow:
    """From a sender that found every routee full: create one more (already counted as growing)."""


@attrs.frozen
class _Started:
    ref: ActorRef[Any]
    error: BaseException | None


@attrs.frozen
class _CreationTimedOut:
    ref: ActorRef[Any]


@attrs.frozen
class _Maintain:
    """The periodic maintenance tick."""


@attrs.frozen
class _Drained:
    """Nothing is in flight or waiting any more (sent while draining)."""


@attrs.frozen
class _DrainExpired:
    """The drain timeout passed."""


_MAINTENANCE_TIMER = "pool-maintenance"
_DRAIN_TIMER = "pool-drain"
# Read by the readiness probe: handled by pykka's proxy machinery after the
# routee's on_start, never by its on_receive.
_PROBE = ProxyGetAttr(attr_path=("actor_urn",))


# -- the pool ------------------------------------------------------------------------------------------


class Pool(Router):
    """A router that owns its routees: creates them from a factory, supervises, sizes and measures them.

    Args:
        factory: a `ChildSpec` (actor class, arguments, mode, restart type,
            mailbox) or an actor class, for every routee; no name (there
            are many).
        config: sizes, limits, strategy, resizer, supervision (default `PoolConfig()`).
        rng: the random source of random strategies (tests seed it).

    Raises:
        ValueError: a factory with a name.
        TypeError: a factory that is neither a ChildSpec nor a class.

    Threading: routing runs on senders' threads (see `Router`); creating,
    retiring and counting routees runs on the pool's own thread.
    """

    management_messages = Router.management_messages | {
        Drain,
        AwaitStarted,
        _Grow,
        _Started,
        _CreationTimedOut,
        _Maintain,
        _Drained,
        _DrainExpired,
    }

    def __init__(
        self,
        factory: ChildSpec | type[pykka.Actor],
        *,
        config: PoolConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(factory, type):
            factory = ChildSpec(factory)
        if not isinstance(factory, ChildSpec):
            msg = f"a pool's factory is a ChildSpec or an actor class, got {factory!r}"
            raise TypeError(msg)
        if factory.name is not None:
            msg = f"a pool's ChildSpec must not have a name (it spawns many routees), got name={factory.name!r}"
            raise ValueError(msg)
        config = config if config is not None else PoolConfig()
        if not isinstance(config, PoolConfig):
            msg = f"config must be a PoolConfig, got {config!r}"
            raise TypeError(msg)
        self.config = config
        self.factory = factory
        self.supervision_policy = config.supervision
        admission = Admission(
            max_concurrent=config.max_concurrent,
            queue_capacity=config.queue_capacity if config.overflow == "queue" else 0,
            max_size=config.max_size,
            grow=self._request_growth,
            exhausted=self._exhausted,
        )
        super().__init__((), config.strategy, rng=rng, admission=admission)
        # The warm-up routees count as growing from here on, so that a message
        # sent before on_start runs waits for them instead of asking for more.
        self._warm_up = config.min_size if config.warm_up else 0
        self._admission.reserve(self._warm_up)
        # Routees spawned and not yet started; each already counts in the admission's `growing`.
        self._starting: set[ActorRef[Any]] = set()
        self._awaiting_start: list[Future[Any]] = []
        self._drain_replies: list[Future[Any]] = []
        self._draining = False
        self._abandoned = 0
        self._drained = False
        self.created = 0
        self.destroyed = 0
        self.failed_creations = 0

    @property
    def _admission(self) -> AdmissionControl:
        # A pool's table always has limits (set in __init__).
        admission = self.routing.admission
        if admission is None:
            msg = f"{self.actor_ref} is a Pool without admission control; every Pool is built with one"
            raise TroupeInternalError(msg)
        return admission

    # -- lifecycle -----------------------------------------------------------------------------------

    def on_start(self) -> None:
        """Warm up, and start the maintenance ticks."""
        for _ in range(self._warm_up):
            self._create(reserved=True)
        self.timers.start_periodic_timer(_MAINTENANCE_TIMER, _Maintain(), self.config.maintenance_interval)

    def on_stop(self) -> None:
        """Refuse what still waits; answer drains (the routees, our children, have stopped by now)."""
        self.refuse_held(ActorDeadError(f"{self.actor_ref} stopped before a routee could take the message"))

    def refuse_held(self, error: BaseException) -> None:
        """This instance has ended: refuse what waits in its queue, answer drains and `AwaitStarted` asks.

        The cell calls it however the pool ends (see `Cell.release_held`):
        a stop (after `on_stop`, which does the same), a failure or a giving
        up (no `on_stop` then), and a restart in place, whose new instance
        starts with a fresh queue. Waiting asks get `error`, waiting tells
        become dead letters. Idempotent: what it answered, it forgets.
        """
        self._admission.close(error)
        result = DrainResult(drained=self._drained, abandoned=self._abandoned)
        drains, self._drain_replies = self._drain_replies, []
        for reply in drains:
            if not reply.done():
                reply.set(result)
        awaiting, self._awaiting_start = self._awaiting_start, []
        for reply in awaiting:
            if not reply.done():
                reply.set_exception((type(error), error, None))

    # -- messages for the pool itself ---------------------------------------------------------------------

    def on_management(self, message: Any, reply: Future[Any]) -> bool:
        """Handle the pool's own messages, then the router's."""
        match message:
            case _Grow():
                self._create(reserved=True)
            case _Started(ref=ref, error=error):
                self._started(ref, error)
            case _CreationTimedOut(ref=ref):
                if ref in self._starting:
                    error = RouteeStartError(
                        f"a routee of {self.actor_ref} ({self.factory.actor_class.__qualname__}) did not "
                        f"start within creation_timeout={self.config.creation_timeout} s; it was stopped"
                    )
                    ref.stop(block=False)
                    self._started(ref, error)
            case _Maintain():
                self._maintain()
            case AwaitStarted():
                if self._starting:
                    self._awaiting_start.append(reply)
                else:
                    reply.set(self.statistics())
            case Drain(timeout=timeout):
                self._drain_replies.append(reply)
                self._begin_drain(timeout)
            case _Drained():
                if self._draining and not self._admission.busy():
                    self._drained = True
                    self._stop_for_good()
            case _DrainExpired():
                if self._draining:
                    in_flight = sum(r.in_flight for r in self.routing.routees)
                    error = ActorDeadError(
                        f"{self.actor_ref} drained for shutdown and its timeout passed before a routee "
                        "could take the message"
                    )
                    self._abandoned = in_flight + self._admission.close(error)
                    self._stop_for_good()
            case AddRoutee():
                msg = f"{self.actor_ref} creates its own routees from its factory; it takes no AddRoutee"
                raise RoutingRequestError(msg)
            case RemoveRoutee(ref=ref):
                reply.set(self._retire(ref, only_if_idle=False))
            case _:
                return super().on_management(message, reply)
        return True

    def statistics(self) -> PoolStatistics:
        """Return a snapshot of the pool's sizes, counters and routees' load."""
        table = self.routing
        processed, failed, spent = table.totals()
        counts = self._admission.counts()
        routees = tuple(r.statistics() for r in table.routees)
        at_once, after_wait = counts.admitted_at_once, counts.admitted_after_wait
        average = spent / processed if processed else 0.0
        return PoolStatistics(
            strategy=table.strategy.name,
            dead_routees_removed=table.dead_removed,
            average_response_time=average,
            size=len(routees),
            starting=len(self._starting),
            busy=sum(1 for r in routees if r.active),
            waiting=counts.waiting,
            min_size=self.config.min_size,
            max_size=self.config.max_size,
            max_concurrent=self.config.max_concurrent,
            created=self.created,
            destroyed=self.destroyed,
            failed_creations=self.failed_creations,
            processed=processed,
            failed=failed,
            refused=counts.refused,
            average_operation_time=average,
            hit_rate=at_once / (at_once + after_wait) if at_once + after_wait else 1.0,
            routees=routees,
        )

    # -- creating routees ------------------------------------------------------------------------------------

    def _request_growth(self) -> None:
        # On a sender's thread: ask the pool actor for one more routee.
        with contextlib.suppress(ActorDeadError):  # the pool is stopping: nothing to grow
            self.actor_ref.tell(_Grow())

    def _create(self, *, reserved: bool) -> None:
        """Spawn a routee; it joins the table once started. `reserved`: the admission counts it as growing already."""
        admission = self._admission
        if not reserved:
            admission.reserve()
        if self._draining:
            admission.growth_failed(ActorDeadError(f"{self.actor_ref} is draining"))
            return
        spec = self.factory
        try:
            ref = self.spawn(
                spec.actor_class,
                *spec.args,
                mode=spec.mode,
                mailbox=spec.mailbox,
                restart=spec.restart,
                **spec.kwargs,
            )
        except Exception as exc:  # noqa: BLE001 - the constructor's error goes to whoever waits
            self.failed_creations += 1
            error = RouteeStartError(
                f"a routee of {self.actor_ref} could not be created: "
                f"{self.factory.actor_class.__qualname__}(...) raised {exc!r}"
            )
            error.__cause__ = exc
            admission.growth_failed(error)
            return
        self._starting.add(ref)
        self.timers.start_single_timer(
            ("pool-create", ref.actor_urn), _CreationTimedOut(ref), self.config.creation_timeout
        )
        own = self.actor_ref
        probe = ref.ask(_PROBE, block=False)

        def started(done: Future[Any]) -> None:  # on the routee's thread, once its on_start has run
            error = None if done._exc_info is None else done._exc_info[1]  # noqa: SLF001
            with contextlib.suppress(ActorDeadError):
                own.tell(_Started(ref, error))

        probe.add_done_callback(started)

    def _started(self, ref: ActorRef[Any], error: BaseException | None) -> None:
        if ref not in self._starting:
            return  # timed out before, or answered twice
        self._starting.discard(ref)
        self.timers.cancel(("pool-create", ref.actor_urn))
        if error is None and ref.is_alive():
            self.created += 1
            self.routing.add(AddRoutee(ref), grown=True)
            self.watch(ref)
        else:
            self.failed_creations += 1
            if not isinstance(error, RouteeStartError):
                cause = error
                error = RouteeStartError(
                    f"a routee of {self.actor_ref} ({self.factory.actor_class.__qualname__}) failed to start: {cause!r}"
                )
                error.__cause__ = cause
            self._admission.growth_failed(error)
        if not self._starting:
            statistics = self.statistics()
            for reply in self._awaiting_start:
                reply.set(statistics)
            self._awaiting_start.clear()

    # -- retiring routees -----------------------------------------------------------------------------------

    def _retire(self, ref: ActorRef[Any], *, only_if_idle: bool) -> bool:
        """Take a routee out of the table and stop it after the messages it already has."""
        if self.routing.remove(ref, only_if_idle=only_if_idle) is None:
            return False
        self.unwatch(ref)
        ref.stop(block=False)
        self.destroyed += 1
        return True

    def on_routee_terminated(self, message: Terminated) -> None:  # noqa: ARG002 - Router's hook; the count is enough here
        """A routee is gone for good (failed past its restarts, or stopped from outside): replace it."""
        self.destroyed += 1
        if not self._draining:
            missing = self.config.min_size - len(self.routing.routees) - self._admission.growing
            for _ in range(missing):
                self._create(reserved=False)

    def _maintain(self) -> None:
        config = self.config
        table = self.routing
        if self._draining:
            return
        now = table.clock.now()
        if config.max_idle is not None:
            for routee in reversed(table.routees):  # the youngest go first
                if len(table.routees) <= config.min_size:
                    break
                if not routee.in_flight and now - routee.last_active >= config.max_idle:
                    self._retire(routee.ref, only_if_idle=True)
        resizer = config.resizer
        if resizer is not None:
            routees = table.routees
            busy = sum(1 for r in routees if r.in_flight >= resizer.pressure_threshold)
            size = len(routees) + self._admission.growing
            change = resizer.capacity_change(size, busy)
            change = max(config.min_size - size, min(config.max_size - size, change))
            for _ in range(change):
                self._create(reserved=False)
            if change < 0:
                # Reversed first: among equally idle routees the youngest goes (a stable sort).
                idle_first = sorted(reversed(routees), key=lambda r: r.in_flight)  # noqa: C414
                for routee in idle_first[:-change]:
                    self._retire(routee.ref, only_if_idle=False)

    # -- draining -----------------------------------------------------------------------------------------

    def _begin_drain(self, timeout: float) -> None:
        if self._draining:
            return
        self._draining = True
        own = self.actor_ref
        admission = self._admission

        def idle() -> None:  # on the thread that finished the last message
            with contextlib.suppress(ActorDeadError):
                own.tell(_Drained())

        admission.drain(idle)
        if not admission.busy():
            self._drained = True
            self._stop_for_good()
            return
        self.timers.start_single_timer(_DRAIN_TIMER, _DrainExpired(), timeout)

    def _stop_for_good(self) -> None:
        # ref.stop(), not self.stop(): a stop from outside is never followed by
        # a restart, whatever the pool's own restart type under its parent.
        self.actor_ref.stop(block=False)

    def _exhausted(self) -> PoolExhaustedError:
        # On a sender's thread, with the table's lock held: counters only.
        config = self.config
        table = self.routing
        msg = (
            f"pool {self.actor_ref} is exhausted: all {len(table.routees)} routees (max_size "
            f"{config.max_size}) have max_concurrent={config.max_concurrent} messages in flight"
            + (
                f" and its queue is full (queue_capacity={config.queue_capacity})"
                if config.overflow == "queue"
                else " and overflow='fail'"
            )
            + "; retry later, raise max_size or max_concurrent, or set overflow='queue'"
        )
        return PoolExhaustedError(msg)
