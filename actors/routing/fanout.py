"""Fan-out asks: the state machines behind asks that go to several routees.

- `gather`: ask every live routee; the reply is the tuple of their replies,
  in table order, or the first failure (``broadcast``, `Broadcast`).
- `first_reply`: ask every live routee; the first success answers, later
  replies are dropped (``scatter_gather_first``).
- `tail_chop`: ask one routee, then one more every interval, until one
  succeeds (``tail_chopping``).

Thread contract: each state object is settled at most once, under its own
lock, by whichever thread sets a routee's reply or fires a deadline (on the
system's scheduler, so a `ManualClock` drives them); the asker's future is
set with no lock held. These build on `RoutingTable`'s sending helpers only.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pykka
from loguru import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core import Future, TimerHandle
    from actors.routing.table import Routee, RoutingTable

__all__ = ["first_reply", "gather", "tail_chop"]


class _FirstReply:
    """The state of one scatter-gather ask: the first success answers, the rest are dropped."""

    __slots__ = ("failures", "future", "lock", "message", "pending", "settled", "table", "timer", "within")

    def __init__(
        self, table: RoutingTable, future: Future[Any], count: int, within: float | None, message: Any
    ) -> None:
        self.table = table
        self.future = future
        self.lock = threading.Lock()
        # Invariant: replies still to come; the ask is settled at most once.
        self.pending = count
        self.settled = False
        self.failures: list[Any] = []
        self.within = within
        self.message = message
        self.timer: TimerHandle | None = None

    def send(self, routee: Routee) -> None:
        sub = self.table.new_future()
        sub.add_done_callback(self._replied)
        self.table.send_ask(routee, self.message, sub, inline=False)

    def sent_all(self) -> None:
        if self.within is not None:
            timer = self.table.scheduler.call_later(self.within, self._expired)
            with self.lock:
                if self.settled:
                    self.table.scheduler.cancel(timer)
                else:
                    self.timer = timer

    def _replied(self, sub: Future[Any]) -> None:
        with self.lock:
            self.pending -= 1
            if self.settled:
                return  # a late reply: dropped
            if sub._exc_info is None:  # noqa: SLF001 - Future's own state; get() would raise
                self.settled = True
                outcome: Any = ("value", sub._value)  # noqa: SLF001
            else:
                self.failures.append(sub._exc_info)  # noqa: SLF001
                if self.pending:
                    return
                self.settled = True
                outcome = ("error", self.failures[0])
            timer = self.timer
        if timer is not None:
            self.table.scheduler.cancel(timer)
        _settle(self.future, outcome)

    def _expired(self) -> None:
        with self.lock:
            if self.settled:
                return
            self.settled = True
        msg = f"no routee of {self.table.ref} replied to {type(self.message).__name__} within {self.within} s"
        _settle(self.future, ("error", (pykka.Timeout, pykka.Timeout(msg), None)))


class _TailChop:
    """The state of one tail-chopping ask: one more routee every `interval` until one succeeds."""

    __slots__ = (
        "deadline",
        "failures",
        "future",
        "interval",
        "lock",
        "message",
        "next_index",
        "order",
        "pending",
        "settled",
        "table",
        "timers",
        "within",
    )

    def __init__(
        self,
        table: RoutingTable,
        future: Future[Any],
        order: list[Routee],
        *,
        interval: float,
        within: float | None,
        message: Any,
    ) -> None:
        self.table = table
        self.future = future
        self.order = order
        self.interval = interval
        self.within = within
        self.message = message
        self.lock = threading.Lock()
        # Invariant: order[:next_index] have been asked; `pending` of them have not answered.
        self.next_index = 0
        self.pending = 0
        self.settled = False
        self.failures: list[Any] = []
        self.timers: list[TimerHandle] = []

    def start(self) -> None:
        if self.within is not None:
            self._arm(self.within, self._expired)
        self._ask_next()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        handle = self.table.scheduler.call_later(delay, callback)
        with self.lock:
            if self.settled:
                self.table.scheduler.cancel(handle)
            else:
                self.timers.append(handle)

    def _ask_next(self) -> None:
        with self.lock:
            if self.settled:
                return
            while self.next_index < len(self.order) and not self.order[self.next_index].cell.alive:
                self.next_index += 1
            if self.next_index >= len(self.order):
                return
            routee = self.order[self.next_index]
            self.next_index += 1
            self.pending += 1
            more = self.next_index < len(self.order)
        sub = self.table.new_future()
        sub.add_done_callback(self._replied)
        self.table.send_ask(routee, self.message, sub, inline=False)
        if more:
            self._arm(self.interval, self._ask_next)

    def _replied(self, sub: Future[Any]) -> None:
        with self.lock:
            self.pending -= 1
            if self.settled:
                return
            if sub._exc_info is None:  # noqa: SLF001
                self.settled = True
                outcome: Any = ("value", sub._value)  # noqa: SLF001
            else:
                self.failures.append(sub._exc_info)  # noqa: SLF001
                exhausted = self.next_index >= len(self.order)
                if not exhausted:
                    outcome = None  # try the next one now rather than at the next tick
                elif self.pending:
                    return
                else:
                    self.settled = True
                    outcome = ("error", self.failures[0])
            timers = list(self.timers) if self.settled else ()
        for handle in timers:
            self.table.scheduler.cancel(handle)
        if outcome is None:
            self._ask_next()
        else:
            _settle(self.future, outcome)

    def _expired(self) -> None:
        with self.lock:
            if self.settled:
                return
            self.settled = True
            asked = self.next_index
            timers = list(self.timers)
        for handle in timers:
            self.table.scheduler.cancel(handle)
        msg = (
            f"no routee of {self.table.ref} replied to {type(self.message).__name__} within {self.within} s "
            f"({asked} of {len(self.order)} asked, {self.interval} s apart)"
        )
        _settle(self.future, ("error", (pykka.Timeout, pykka.Timeout(msg), None)))


def first_reply(table: RoutingTable, message: Any, future: Future[Any], within: float | None) -> None:
    """Ask every live routee of `table`; `future` gets the first success, or the first failure if all fail.

    With `within`, `future` fails with `pykka.Timeout` after that many
    seconds of the system's clock without a success.
    """
    routees = table.live_routees()
    if not routees:
        raise table.no_routee(message)
    race = _FirstReply(table, future, len(routees), within, message)
    for routee in routees:
        race.send(routee)
    race.sent_all()


def tail_chop(
    table: RoutingTable,
    message: Any,
    future: Future[Any],
    order: list[Routee],
    *,
    interval: float,
    within: float | None,
) -> None:
    """Ask the routees in `order` one after another, `interval` seconds apart, until one succeeds.

    A failure moves on to the next at once; with `within`, `future` fails
    with `pykka.Timeout` after that many seconds without a success.
    """
    _TailChop(table, future, order, interval=interval, within=within, message=message).start()


def gather(table: RoutingTable, message: Any, future: Future[Any]) -> None:
    """Ask every live routee of `table`; `future` gets the tuple of replies (table order), or the first failure."""
    routees = table.live_routees()
    if not routees:
        raise table.no_routee(message)
    state = _Gather(future, len(routees))
    for index, routee in enumerate(routees):
        sub = table.new_future()
        sub.add_done_callback(state.callback(index))
        table.send_ask(routee, message, sub, inline=False)


class _Gather:
    """The state of one broadcast ask: every reply, in order; the first failure fails it."""

    __slots__ = ("future", "lock", "pending", "replies", "settled")

    def __init__(self, future: Future[Any], count: int) -> None:
        self.future = future
        self.lock = threading.Lock()
        self.pending = count
        self.replies: list[Any] = [None] * count
        self.settled = False

    def callback(self, index: int) -> Callable[[Future[Any]], None]:
        def replied(sub: Future[Any]) -> None:
            with self.lock:
                if self.settled:
                    return
                if sub._exc_info is not None:  # noqa: SLF001
                    self.settled = True
                    outcome: Any = ("error", sub._exc_info)  # noqa: SLF001
                else:
                    self.replies[index] = sub._value  # noqa: SLF001
                    self.pending -= 1
                    if self.pending:
                        return
                    self.settled = True
                    outcome = ("value", tuple(self.replies))
            _settle(self.future, outcome)

        return replied


def _settle(future: Future[Any], outcome: tuple[str, Any]) -> None:
    kind, value = outcome
    try:
        if kind == "value":
            future.set(value)
        else:
            future.set_exception(value)
    except Exception:  # noqa: BLE001 - queue.Full: settled elsewhere (it never is, by the flags)
        logger.opt(exception=True).error("A routed ask's future was set twice")
