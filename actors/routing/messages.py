"""What a router is told or asked about its table, and the snapshots it answers with.

The management messages (`AddRoutee`, `RemoveRoutee`, `GetRoutees`,
`GetStatistics`) go to the router actor's mailbox; `Broadcast` is sent to
every routee; `_Managed` and `_Route` are the router's own envelopes. The
snapshots (`RouteeStatistics`, `RouterStatistics`) are frozen all the way
down (tuples and frozensets only), so they are hashable and compare by value.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs

from actors._core import ActorRef, Future

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "AddRoutee",
    "Broadcast",
    "GetRoutees",
    "GetStatistics",
    "RemoveRoutee",
    "RouteeStatistics",
    "RouterStatistics",
    "capability_set",
]


def capability_set(value: Iterable[str] | str) -> frozenset[str]:
    """Return capabilities given as one name or an iterable of names, as a frozenset."""
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset(value)


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


# -- management messages -------------------------------------------------------------------------


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


# -- the router's own envelopes ------------------------------------------------------------------


@attrs.frozen
class _Managed:
    """An ask of a management message: the router replies into `reply` (possibly later).

    Carries its reply (`CarriesReply`): dead-lettered (its router stopped
    with it queued), `reply` gets `ActorDeadError`.
    """

    message: Any
    reply: Future[Any]

    def carried_reply(self) -> Future[Any]:
        """The future the asker waits on (the dead-letter office fails it)."""
        return self.reply


@attrs.frozen
class _Route:
    """A message the router must route from its own thread (strategy not thread-safe, or not yet installed).

    Carries its reply, if an ask (`CarriesReply`): dead-lettered, `reply`
    gets `ActorDeadError` (or the error the router failed with).
    """

    message: Any
    reply: Future[Any] | None
    inline: bool = False

    def carried_reply(self) -> Future[Any] | None:
        """The future the asker waits on, None for a tell (the dead-letter office fails it)."""
        return self.reply


# -- statistics ------------------------------------------------------------------------------------


def _routee_tuple(routees: Iterable[RouteeStatistics]) -> tuple[RouteeStatistics, ...]:
    """Hold the routees' snapshots as a tuple, whatever iterable they came in (snapshots are immutable)."""
    return tuple(routees)


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
    routees: tuple[RouteeStatistics, ...] = attrs.field(converter=_routee_tuple)
    waiting: int
    processed: int
    failed: int
    average_response_time: float
    dead_routees_removed: int
