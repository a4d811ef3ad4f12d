"""Scatter-gather: ask several targets the same thing; finish on all, the first k, or a quorum.

    result = scatter_gather(replicas, Query("q"), finish="first", timeout=2.0, backup_after=0.2).get()
    result.values            # the replies that arrived, in arrival order
    result.complete          # whether the finish condition was met
    result.missing           # who did not answer, and result.failures: who failed, with the error

Every result says what arrived, what failed (and why) and what is missing.
Times are seconds of the targets' system clock (a `ManualClock` in tests):

- `timeout`: stop waiting; ``complete`` is False if the condition was not met.
- `backup_after` (tail chopping, as in Akka and `TailChoppingRouting`): if
  the condition is not met after this delay, ask the next target not yet
  asked (``initial`` of them are asked at once; by default all of them, so
  give ``initial=1`` for a primary-and-backups pattern), and again after each
  further delay until every target has been asked.

The gather ends as soon as the condition can no longer be met (too many
failures) too. Replies that come after the end are ignored. For a `Pool` of
interchangeable routees, a `Router` with ``scatter_gather_first`` or
``tail_chopping`` routing does the first-reply case on the sender's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs

from actors import ActorRef, CoordinationInputError, Future

__all__ = ["GatherResult", "scatter_gather"]

Finish = Literal["all", "first", "quorum"]


@attrs.frozen
class GatherResult:
    """What a scatter-gather collected.

    Attributes:
        complete: whether the finish condition was met.
        replies: (target, reply) in arrival order.
        failures: (target, error) for each target whose ask failed.
        missing: targets asked that had not answered at the end, and targets never asked.
        needed: how many replies the condition needed.
        backups_sent: targets asked by tail chopping.
        reason: why it ended: "met", "timeout" or "unreachable" (too many failures).
    """

    complete: bool
    replies: tuple[tuple[ActorRef[Any], Any], ...]
    failures: tuple[tuple[ActorRef[Any], BaseException], ...]
    missing: tuple[ActorRef[Any], ...]
    needed: int
    backups_sent: int
    reason: str

    @property
    def values(self) -> list[Any]:
        """Return the replies' values, in arrival order."""
        return [value for _, value in self.replies]


def scatter_gather(
    targets: Sequence[ActorRef[Any]],
    message: Any,
    *,
    finish: Finish = "all",
    k: int | None = None,
    timeout: float | None = None,
    backup_after: float | None = None,
    initial: int | None = None,
) -> Future[GatherResult]:
    """Ask `targets` `message`; return a future of the `GatherResult` (see the module docs).

    Args:
        targets: the actors to ask (in the order backups go out).
        message: what each is asked.
        finish: ``"all"``, ``"first"`` (the first `k`, default 1) or ``"quorum"``
            (`k` replies, default a majority of the targets).
        k: replies needed for ``first`` and ``quorum``.
        timeout: seconds before giving up.
        backup_after: seconds between tail-chopping backups.
        initial: targets asked at once (default: all, or 1 with `backup_after`).

    Raises:
        CoordinationInputError: no targets, an unknown finish, k out of
            1..len(targets), a delay <= 0, initial out of 1..len(targets).
    """
    n = len(targets)
    if n == 0:
        msg = "scatter_gather needs at least one target; got none"
        raise CoordinationInputError(msg)
    if finish not in ("all", "first", "quorum"):
        msg = f"scatter_gather finish must be 'all', 'first' or 'quorum', got {finish!r}"
        raise CoordinationInputError(msg)
    if finish == "all":
        if k is not None:
            msg = "scatter_gather(finish='all') takes no k: it needs every reply"
            raise CoordinationInputError(msg)
        needed = n
    else:
        needed = k if k is not None else (1 if finish == "first" else n // 2 + 1)
    if isinstance(needed, bool) or not isinstance(needed, int) or not 1 <= needed <= n:
        msg = f"scatter_gather k must be an int in 1..{n} (the number of targets), got {k!r}"
        raise CoordinationInputError(msg)
    for name, value in (("timeout", timeout), ("backup_after", backup_after)):
        if value is not None and not value > 0:
            msg = f"scatter_gather {name} must be > 0 seconds or None, got {value!r}"
            raise CoordinationInputError(msg)
    first = initial if initial is not None else (1 if backup_after is not None else n)
    if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= n:
        msg = f"scatter_gather initial must be an int in 1..{n}, got {initial!r}"
        raise CoordinationInputError(msg)
    return _Gather(list(targets), message, needed, timeout, backup_after).start(first)


class _Gather:
    def __init__(
        self,
        targets: list[ActorRef[Any]],
        message: Any,
        needed: int,
        timeout: float | None,
        backup_after: float | None,
    ) -> None:
        self.targets = targets
        self.message = message
        self.needed = needed
        self.timeout = timeout
        self.backup_after = backup_after
        self.future: Future[GatherResult] = Future()
        self.system = targets[0].actor_system
        self._lock = threading.Lock()
        self._asked = 0  # Invariant: targets[:_asked] have been asked.
        self._answered: set[int] = set()
        self._replies: list[tuple[ActorRef[Any], Any]] = []
        self._failures: list[tuple[ActorRef[Any], BaseException]] = []
        self._backups = 0
        self._done = False
        self._timers: list[Callable[[], None]] = []

    def start(self, first: int) -> Future[GatherResult]:
        if self.timeout is not None:
            self._timers.append(self.system.call_later(self.timeout, lambda: self._end("timeout")))
        for _ in range(first):
            self._ask_next(backup=False)
        return self.future

    def _ask_next(self, *, backup: bool) -> None:
        with self._lock:
            if self._done or self._asked >= len(self.targets):
                return
            index = self._asked
            self._asked += 1
            if backup:
                self._backups += 1
            more = self.backup_after is not None and self._asked < len(self.targets)
        if more and self.backup_after is not None:
            self._timers.append(self.system.call_later(self.backup_after, lambda: self._ask_next(backup=True)))
        target = self.targets[index]
        future = target.ask(self.message, block=False)
        future.add_done_callback(lambda f: self._answer(index, f))

    def _answer(self, index: int, future: Any) -> None:
        target = self.targets[index]
        try:
            value = future.get()
        except Exception as exc:  # noqa: BLE001 - reported in the result
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, value)
        with self._lock:
            if self._done:
                return
            self._answered.add(index)
            if outcome[0]:
                self._replies.append((target, outcome[1]))
            else:
                self._failures.append((target, outcome[1]))
            met = len(self._replies) >= self.needed
            unreachable = len(self.targets) - len(self._failures) < self.needed
            idle = self._asked == len(self._answered) and self._asked < len(self.targets)
        if met:
            self._end("met")
        elif unreachable:
            self._end("unreachable")
        elif idle and not outcome[0]:
            self._ask_next(backup=True)  # a failure frees a turn: do not wait for the backup timer

    def _end(self, reason: str) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            missing = tuple(t for i, t in enumerate(self.targets) if i not in self._answered)
            result = GatherResult(
                complete=len(self._replies) >= self.needed,
                replies=tuple(self._replies),
                failures=tuple(self._failures),
                missing=missing,
                needed=self.needed,
                backups_sent=self._backups,
                reason=reason,
            )
        for cancel in self._timers:
            cancel()
        self.future.set(result)
