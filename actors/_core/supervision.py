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

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from actors._core.mailbox import MailboxSpec
    from actors._core.ref import ActorRef

__all__ = [
    "DEFAULT_POLICY",
    "Backoff",
    "ChildSpec",
    "Decider",
    "Directive",
    "RestartType",
    "SupervisionPolicy",
    "SupervisionStrategy",
    "Terminated",
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

    rules: Mapping[type[BaseException], Directive] = attrs.field(factory=dict, converter=dict)
    default: Directive = Directive.RESTART
    ask_failures: tuple[type[BaseException], ...] = attrs.field(default=(), converter=tuple)

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
    args: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    kwargs: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
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
