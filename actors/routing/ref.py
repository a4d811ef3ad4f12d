"""`RouterRef`: a router's address, whose `tell` and `ask` route on the caller's thread.

The hot path: a routed tell is one strategy step and the routee's mailbox
append, with no Python call in between for turn-based strategies (see
`RouterRef.tell`). It touches a routee cell's ``queue``, ``sched``,
``executor`` and ``alive`` only, as `ActorRef.tell` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import pykka
from pykka import ActorDeadError

from actors._core import MESSAGE_KINDS as _CELL_KINDS
from actors._core import TRACING, ActorRef, trace_message
from actors.errors import TroupeError
from actors.routing.fanout import gather
from actors.routing.messages import Broadcast, _Managed, _Route
from actors.routing.table import _TrackedFuture

if TYPE_CHECKING:
    from actors._core import Cell, Future
    from actors.routing.table import RoutingTable

__all__ = ["RouterRef"]

A = TypeVar("A", bound=pykka.Actor)

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
        # pinned pooled tells: 1.52x -> see benchmarks/routing.py). With
        # tracing on somewhere (`TRACING` not empty), the message goes with its
        # trace context, as `ActorRef.tell` sends it.
        cells = table.turn_cells
        if cells:
            cell = cells[table.turn() % len(cells)]  # type: ignore[misc]
            if cell.alive:
                cell.queue.append(trace_message(cell, message) if TRACING else message)
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
        future._label = self  # noqa: SLF001 - formatted only on Timeout
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
            # A wrapper dead-lettered on the way (`_Managed`, `_Route`) had its future failed already.
            if not future.done():
                future.set_exception()

    @property
    def routing(self) -> RoutingTable | None:
        """The router's table (None while the router is being built)."""
        return self._routing
