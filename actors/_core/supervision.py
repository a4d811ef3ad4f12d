"""Supervision: what happens when an actor fails, decided by its parent.

The semantics are Erlang/OTP's supervisors and Akka's supervision, on top of
pykka's actors:

- Every actor supervises the children it spawns, with the policy in its
  ``supervision_policy`` attribute (`SupervisionPolicy`; `actors.Supervisor`
  takes one as an argument). The system's root actor supervises top-level
  actors with the default policy.
- A child's restart type (`RestartType`) says whether it may come back:
  ``permanent`` after a failure or after it stops itself (``self.stop()``);
  ``transient`` after a failure only; ``temporary`` never (the default for
  ``spawn``, so that plain pykka semantics hold: a failure stops the actor).
  A stop requested from outside (``ref.stop()``, `Supervisor.terminate_child`,
  the parent or the system stopping) is never followed by a restart, whatever
  the type: pykka's ``ref.stop()`` promises the actor is gone.
- When a restartable child fails, it is suspended (mail keeps queueing, none is
  handled), the message that raised goes to dead letters and the parent's
  decider picks a `Directive`.
- A restart happens *in place*: the cell (mailbox, address, name) stays and
  only the instance is replaced, so refs and proxies taken before still reach
  the actor and queued mail is handled by the new instance, in order.

Which thread runs what: the decision runs in the parent's turn (as a system
message, ahead of the parent's user messages); tearing down the old instance
(timers cancelled, ``on_stop`` if it did not fail, ``pre_restart``, children
stopped) and building the new one (``__init__``, ``post_restart``) run in the
child's own turn, on the child's executor, like its other hooks.

The supervisor's side is `Supervising`, one per cell that has had a child
fail: the decision (`Supervising.child_failed`) and the group restart it
starts (`Supervising.group_step`); the child's side of a restart is
`actors._core.lifecycle.Restart`.

Ordering promised: under ``one_for_all`` and ``rest_for_one`` the group is
torn down in reverse start order, one at a time, then rebuilt in start order,
one at a time; a failure reported while a group is being restarted waits for
it to finish. While it restarts a group a supervisor handles no user message
(an Erlang supervisor is busy too), except while a backoff delay runs; so an
ask sent to a supervisor after a child's failure was reported is answered
once the restart is over.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from actors._core.frozendict import FrozenDict
from actors._core.lifecycle import STOP, Restart
from actors.errors import RestartIntensityError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from actors._core.cell import Cell
    from actors._core.mailbox import MailboxSpec
    from actors._core.ref import ActorRef

__all__ = [
    "DEFAULT_POLICY",
    "Backoff",
    "ChildSpec",
    "Decider",
    "Directive",
    "RestartType",
    "Supervising",
    "SupervisionPolicy",
    "SupervisionStrategy",
    "Terminated",
    "policy_of",
]


class Directive(enum.Enum):
    """What a supervisor does with a child that failed."""

    RESUME = "resume"
    """Keep the instance and its state; skip the message that raised."""
    RESTART = "restart"
    """Replace the instance with a fresh one (and its group, by the strategy)."""
    STOP = "stop"
    """Stop the child for good; its queued mail goes to dead letters."""
    ESCALATE = "escalate"
    """Fail the supervisor itself with the same exception: its parent decides."""


class RestartType(enum.StrEnum):
    """When a child may be restarted (Erlang's child restart types)."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class SupervisionStrategy(enum.StrEnum):
    """Which children a restart takes along (Erlang's restart strategies)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that failed."""
    ONE_FOR_ALL = "one_for_all"
    """Every child of the supervisor."""
    REST_FOR_ONE = "rest_for_one"
    """The child that failed and the ones started after it."""


@attrs.frozen
class Terminated:
    """Delivered to a watcher's ``on_receive`` when a watched actor is gone for good.

    Attributes:
        ref: the actor that terminated.
        reason: None if it stopped normally, else the exception it failed with.
    """

    ref: ActorRef[Any]
    reason: BaseException | None = None


# Typed converters (the attrs mypy plugin cannot type ``converter=dict``):
# what a frozen class keeps is frozen, so it can be shared and hashed.


def _frozen_rules(rules: Mapping[type[BaseException], Directive]) -> FrozenDict[type[BaseException], Directive]:
    """Return a `Decider`'s rules as a `FrozenDict`."""
    return rules if isinstance(rules, FrozenDict) else FrozenDict(rules)


def _exception_types(types: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    """Return a `Decider`'s ask-failure types as a tuple."""
    return tuple(types)


def _arguments(args: Iterable[Any]) -> tuple[Any, ...]:
    """Return a `ChildSpec`'s positional arguments as a tuple."""
    return tuple(args)


def _keyword_arguments(kwargs: Mapping[str, Any]) -> FrozenDict[str, Any]:
    """Return a `ChildSpec`'s keyword arguments as a `FrozenDict`."""
    return kwargs if isinstance(kwargs, FrozenDict) else FrozenDict(kwargs)


@attrs.frozen
class Decider:
    """Map exception types to directives (the most specific listed base class wins).

    Args:
        rules: exception type -> directive; a subclass matches its base's rule
            unless it has its own, the nearest base in the MRO winning.
        default: the directive for exceptions no rule matches (RESTART).
        ask_failures: exception types that also fail the actor when raised
            while handling an ask. By default (pykka's semantics) an exception
            in an ask handler only goes to the asker and the actor keeps its state.
    """

    rules: FrozenDict[type[BaseException], Directive] = attrs.field(factory=FrozenDict, converter=_frozen_rules)
    default: Directive = Directive.RESTART
    ask_failures: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_exception_types)

    def __attrs_post_init__(self) -> None:
        for exc_type, directive in self.rules.items():
            if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
                msg = f"Decider rules map exception types to directives; {exc_type!r} is not an exception type"
                raise TypeError(msg)
            if not isinstance(directive, Directive):
                msg = f"Decider rule for {exc_type.__name__} must be a Directive, got {directive!r}"
                raise TypeError(msg)

    def __call__(self, exc: BaseException) -> Directive:
        """Return the directive for `exc`."""
        rules = self.rules
        for klass in type(exc).__mro__:
            directive = rules.get(klass)
            if directive is not None:
                return directive
        return self.default


def _positive(_instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        msg = f"{attribute.name} must be > 0, got {value!r}"
        raise ValueError(msg)


@attrs.frozen
class Backoff:
    """Exponential backoff with jitter before restarting a child that keeps failing.

    The n-th restart of the same child within the policy's ``within_seconds``
    window (n = 0 for the first) waits ``min(maximum, minimum * factor**n)``
    seconds, stretched by a random fraction up to `jitter`. Time comes from
    the system's clock, so a `ManualClock` drives it in tests.
    """

    minimum: float = attrs.field(default=0.1, validator=_positive)
    maximum: float = attrs.field(default=10.0, validator=_positive)
    factor: float = attrs.field(default=2.0, validator=_positive)
    jitter: float = attrs.field(default=0.2, validator=attrs.validators.ge(0))
    random: random.Random = attrs.field(factory=random.Random, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.maximum < self.minimum:
            msg = f"Backoff maximum ({self.maximum}) must be >= minimum ({self.minimum})"
            raise ValueError(msg)

    def delay(self, attempt: int) -> float:
        """Return the seconds to wait before restart number `attempt` (0-based)."""
        base = min(self.maximum, self.minimum * self.factor ** min(attempt, 64))
        return base * (1 + self.jitter * self.random.random())


def _strategy(value: SupervisionStrategy | str) -> SupervisionStrategy:
    try:
        return SupervisionStrategy(value)
    except ValueError:
        msg = f"unknown supervision strategy {value!r}; choose one of {[s.value for s in SupervisionStrategy]}"
        raise ValueError(msg) from None


@attrs.frozen
class SupervisionPolicy:
    """How an actor supervises its children.

    Defaults: ``one_for_one``; at most 1 restart within 5 seconds (Erlang/OTP's
    default intensity) before the supervisor gives up and fails itself; no
    backoff; every exception restarts (``Decider()``).

    Args:
        strategy: ``one_for_one``, ``one_for_all`` or ``rest_for_one``.
        max_restarts: restarts allowed within `within_seconds`; one more makes
            the supervisor stop its children and fail with `RestartIntensityError`
            (its own parent decides; at the root the child is stopped and logged).
        within_seconds: the sliding window of `max_restarts`.
        backoff: delay restarts of a child that keeps failing (None: restart at once).
        decider: exception -> `Directive`; a `Decider` or any callable.
    """

    strategy: SupervisionStrategy = attrs.field(default=SupervisionStrategy.ONE_FOR_ONE, converter=_strategy)
    max_restarts: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    within_seconds: float = attrs.field(default=5.0, validator=_positive)
    backoff: Backoff | None = None
    decider: Callable[[BaseException], Directive] = attrs.field(factory=Decider)

    def fails_on_ask(self, exc: BaseException) -> bool:
        """Return whether `exc`, raised while handling an ask, also fails the actor."""
        decider = self.decider
        return isinstance(decider, Decider) and bool(decider.ask_failures) and isinstance(exc, decider.ask_failures)


DEFAULT_POLICY = SupervisionPolicy()


def restart_type(value: RestartType | str) -> RestartType:
    """Validate a restart type given as an enum member or its name."""
    try:
        return RestartType(value)
    except ValueError:
        msg = f"unknown restart type {value!r}; choose one of {[r.value for r in RestartType]}"
        raise ValueError(msg) from None


@attrs.frozen
class ChildSpec:
    """How a `Supervisor` starts (and restarts) one child.

    Args:
        actor_class: the actor class (any class `ActorSystem.spawn` accepts).
        args, kwargs: constructor arguments, used again for every restart.
        name: unique among the system's live actors, or None.
        mode: execution mode (None: the class's own, else ``"pooled"``).
        restart: ``permanent`` (default, as in Erlang), ``transient`` or ``temporary``.
        mailbox: a mailbox spec, or None for FIFO.
    """

    actor_class: type
    args: tuple[Any, ...] = attrs.field(default=(), converter=_arguments)
    kwargs: FrozenDict[str, Any] = attrs.field(factory=FrozenDict, converter=_keyword_arguments)
    name: str | None = None
    mode: str | None = None
    restart: RestartType = attrs.field(default=RestartType.PERMANENT, converter=restart_type)
    mailbox: MailboxSpec | None = None


class RestartLog:
    """A supervisor's recent restarts, for intensity and backoff (one per supervising cell).

    Invariant: holds (time, child urn) of the restarts decided within the last
    ``within_seconds``, oldest first; only the supervisor's own turn touches it.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: deque[tuple[float, str]] = deque()

    def record(self, now: float, urn: str, policy: SupervisionPolicy) -> tuple[bool, int]:
        """Record a restart of `urn`; return (intensity exceeded, earlier restarts of `urn` in the window)."""
        entries = self._entries
        horizon = now - policy.within_seconds
        while entries and entries[0][0] <= horizon:
            entries.popleft()
        attempt = sum(1 for _, u in entries if u == urn)
        entries.append((now, urn))
        return len(entries) > policy.max_restarts, attempt


def policy_of(actor: object) -> SupervisionPolicy:
    """Return the supervision policy of an actor instance (its ``supervision_policy``, or the default)."""
    return getattr(actor, "supervision_policy", DEFAULT_POLICY)


class _GroupRestart:
    """A restart under way: `members` (start order) torn down last-first, then rebuilt in order."""

    __slots__ = ("delay", "exc", "members", "next", "parked", "teardown")

    def __init__(self, members: list[Cell], exc: BaseException | None, delay: float) -> None:
        self.parked = False  # a step arrived while the supervisor itself had failed
        self.members = members
        self.teardown = list(members)  # popped from the end: reverse start order
        self.exc = exc
        self.delay = delay
        self.next = 0


class Supervising:
    """A cell's side as a supervisor: deciding what happens to failed children, and restarting them.

    Thread contract: only the supervising cell's own turn touches it; every
    method runs there (`continue_group` and a child's termination callback
    may run on any thread, and only post a system message).
    """

    __slots__ = ("cell", "deferred", "group", "log")

    def __init__(self, cell: Cell) -> None:
        self.cell = cell
        self.log = RestartLog()
        # Invariant: at most one group restart at a time; failures reported
        # meanwhile wait in `deferred`, in arrival order.
        self.group: _GroupRestart | None = None
        self.deferred: list[tuple[Cell, BaseException | None, int]] = []

    def child_failed(self, child: Cell, exc: BaseException | None, incarnation: int) -> None:
        """Decide what happens to a failed child (a system message in the supervisor's turn).

        `exc` is None when a permanent child exited; `incarnation` tells a
        report of an older instance (stale) from the current one.
        """
        cell = self.cell
        if not cell.is_running() or not child.is_running() or child.incarnation != incarnation:
            return  # we are stopping (the child will be too), or the report is stale
        if self.group is not None:
            self.deferred.append((child, exc, incarnation))
            return
        policy = policy_of(cell.actor)
        if exc is None or child.actor is None:
            directive = Directive.RESTART  # a normal exit, or no instance left to resume
        else:
            try:
                directive = policy.decider(exc)
                if not isinstance(directive, Directive):
                    msg = f"the decider of {cell.ref} returned {directive!r}, not a Directive"
                    raise TypeError(msg)  # noqa: TRY301
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Decider of {} failed on {!r}; escalating", cell.ref, exc)
                directive = Directive.ESCALATE
        if directive is Directive.RESUME:
            child.post_system(_resume)
        elif directive is Directive.STOP:
            child.reason = exc
            child.post_system(STOP)
        elif directive is Directive.ESCALATE and exc is not None:  # a normal exit is always restarted
            self.escalate(child, exc)
        else:
            exceeded, attempt = self.log.record(cell.system.clock.now(), child.urn, policy)
            if exceeded:
                msg = (
                    f"{cell.ref} gave up: more than {policy.max_restarts} restart(s) within "
                    f"{policy.within_seconds} s; the last failure was in {child.ref}: {exc!r}. "
                    "Fix the failing actor, or raise max_restarts / within_seconds in its supervision_policy"
                )
                err = RestartIntensityError(msg)
                err.__cause__ = exc
                self.escalate(child, err)
                return
            delay = policy.backoff.delay(attempt) if policy.backoff is not None else 0.0
            self.group = _GroupRestart(self._restart_group(child, policy), exc, delay)
            self.group_step()

    def _restart_group(self, child: Cell, policy: SupervisionPolicy) -> list[Cell]:
        if policy.strategy is SupervisionStrategy.ONE_FOR_ONE:
            return [child]
        children = self.cell.children_snapshot()
        if policy.strategy is SupervisionStrategy.REST_FOR_ONE:
            children = children[children.index(child) :] if child in children else [child]
        return [c for c in children if not c.is_stopping()]

    def group_step(self) -> None:
        """Advance the group restart by one child: teardown in reverse start order, then rebuild in order.

        Each step is one system message to one child; the child posts
        `group_step` back to us when it is done (`continue_group`), so the
        order holds across executors and no thread ever waits for another.
        """
        cell = self.cell
        group = self.group
        if group is None or not cell.is_running():
            return
        if cell.failed:  # we failed meanwhile: our parent decides; a resume goes on from here
            group.parked = True
            return
        # Busy restarting: user messages wait, as an Erlang supervisor is busy too.
        cell.suspended = True
        if group.teardown:
            child = group.teardown.pop()
            if child.restart is None:  # temporary: stopped, never restarted
                group.members.remove(child)
                child.post_system(STOP)
                child.on_terminated(self._member_terminated)
            else:
                # The last one torn down is the first one rebuilt: then one
                # system message does both (a one_for_one restart is then
                # three hand-offs: report, restart, done).
                both = not group.teardown and group.delay == 0 and child is group.members[0]
                if both:
                    group.next = 1
                restart = Restart(child, group.exc, self.continue_group, rebuild_after=both)
                child.post_system(restart.teardown)
            return
        if group.delay > 0:
            delay, group.delay = group.delay, 0.0
            cell.suspended = False  # not busy while the backoff runs
            cell.system.scheduler.call_later(delay, self.continue_group)
            return
        if group.next < len(group.members):
            child = group.members[group.next]
            group.next += 1
            child.post_system(Restart(child, group.exc, self.continue_group, rebuild_after=False).rebuild)
            return
        self.group = None
        cell.suspended = False
        deferred, self.deferred = self.deferred, []
        for child, exc, incarnation in deferred:
            self.child_failed(child, exc, incarnation)

    def continue_group(self) -> None:
        """Go on with the group restart in a turn of ours (any thread: a child's step is done)."""
        self.cell.post_system(_group_step)

    def _member_terminated(self, _child: Cell) -> None:
        self.continue_group()

    def resumed(self) -> None:
        """We were resumed after failing ourselves: a group restart parked meanwhile goes on."""
        group = self.group
        if group is not None and group.parked:
            group.parked = False
            self.group_step()

    def escalate(self, child: Cell, exc: BaseException) -> None:
        """Give up on `child`: at the root, stop it and log; elsewhere fail ourselves with `exc`."""
        cell = self.cell
        if cell.parent is None:  # the system's root actor never fails
            logger.opt(exception=exc).error("{} stopped for good: its failure reached the root", child.ref)
            child.reason = exc
            child.post_system(STOP)
            return
        # Erlang: a supervisor that gives up terminates its children, then exits.
        cell.suspended = True
        cell.stop_children(_Escalation(cell, exc).children_stopped)


class _Escalation:
    """A supervisor giving up: once its children are stopped, it fails with `exc`."""

    __slots__ = ("cell", "exc")

    def __init__(self, cell: Cell, exc: BaseException) -> None:
        self.cell = cell
        self.exc = exc

    def children_stopped(self) -> None:
        exc = self.exc
        self.cell.fail((type(exc), exc, exc.__traceback__))


def _resume(cell: Cell) -> None:
    cell.resume()


def _group_step(cell: Cell) -> None:
    cell.supervising().group_step()
