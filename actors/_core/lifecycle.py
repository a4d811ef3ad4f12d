"""Stopping a cell's children and restarting its actor in place: two small state machines.

Both are asynchronous, Akka-style, so that no executor thread ever blocks
waiting for another actor: each step may have to wait (an asyncio handler
being cancelled, a coroutine hook, a child terminating), and the next step
runs from where that wait ended, in a later turn maybe. The steps are the
methods of one object, named for what has just happened
(``quiesced``, ``on_stop_ended``, ...), in the order they run.

- `StopChildren`: a cell stops its children youngest first, one at a time,
  and resumes when each has terminated; only then does the step that waited
  for it run (stopping for good: ``on_stop``; a restart's teardown: the
  rebuild; a supervisor that gives up: its own failure). A child on the same
  dispatcher pool is stopped inline, on the parent's dispatcher thread, which
  keeps a shutdown of 100,000 pooled actors to one pass.
- `Restart`: a child being restarted by its supervisor's group restart
  (`actors._core.supervision.Supervising`): the old instance is torn down,
  then a new one built into the same cell, then the supervisor is told.

Thread contract: every step runs in a turn of the cell it belongs to
(holding its `sched`), or in a handler task's last step on an asyncio
cell's loop, where that turn is suspended.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from actors._core.logbridge import report

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core._pykka import OptExcInfo
    from actors._core.cell import Cell

__all__ = ["RUNNING", "STARTING", "STOP", "STOPPING", "TERMINATED", "Restart", "StopChildren", "exc_info_of"]

# A cell's states (``Cell.state``); they only move forward.
STARTING, RUNNING, STOPPING, TERMINATED = range(4)


def exc_info_of(exc: BaseException) -> OptExcInfo:
    """Return the exc_info tuple of `exc`."""
    return (type(exc), exc, exc.__traceback__)


def _stop(cell: Cell) -> None:
    cell.begin_stop()


STOP = _stop
"""The system message that stops a cell now, ahead of queued user messages."""


class StopChildren:
    """A cell stopping every child, youngest first, one at a time; then the step that waited for it.

    Steps: `start` (cancel the asyncio handlers in flight) -> `quiesced` ->
    `next_child` (again after each child that had to be waited for) -> `then`.
    """

    __slots__ = ("cell", "finish_stop_first", "pending", "then")

    def __init__(self, cell: Cell) -> None:
        self.cell = cell
        # Invariant: the children still to stop, youngest last; snapshotted
        # once (a stopping cell accepts no new children, and walking a dict
        # from its end after many deletions is O(n) per step).
        self.pending: list[Cell] | None = None
        # The step to run once every child has terminated.
        self.then: Callable[[], None] = _nothing
        # Set when a stop came while a restart's teardown was stopping the
        # children: finish stopping first, then let `then` (the restart) go on.
        self.finish_stop_first = False

    def start(self, then: Callable[[], None]) -> None:
        """Stop the children, then `then()`; asyncio handlers in flight are cancelled first, and waited for."""
        self.then = then
        self.finish_stop_first = False
        self.cell.quiesce(self.quiesced)

    def quiesced(self) -> None:
        """Every handler task has ended: go on with the children."""
        _continue_children(self.cell)

    def next_child(self) -> None:
        """Stop the children one after the other; wait (return) at the first that cannot stop right here."""
        cell = self.cell
        pending = self.pending
        if pending is None:
            # A cell that never had a child is not snapshotted under the
            # system's tree lock: 10,000 thread actors stopping at once all
            # queued on that one lock here. Safe because a spawner adopts the
            # child *before* it checks that the parent is not stopping
            # (`ActorSystem._new_cell`), and stopping writes `state` before
            # this read: under the GIL one of the two sees the other's write,
            # so either the child is seen here (and snapshotted under the
            # lock) or the spawn is refused.
            pending = self.pending = [] if cell.children is None else cell.children_snapshot()
        # `state` read directly, not through `is_terminated()`: this loop runs
        # twice per actor in a shutdown of 100,000 pooled actors.
        while pending:
            child = pending[-1]
            if child.state != TERMINATED:
                child.stop_now()
                if child.state != TERMINATED:
                    child.on_terminated(self._child_terminated)
                    return
            pending.pop()
        cell.children_stop = None
        if self.finish_stop_first:
            cell.finish_stop()
        self.then()

    def _child_terminated(self, _child: Cell) -> None:
        # A child that could not be stopped right here calls us back when it
        # has terminated (any thread): go on in a turn of ours.
        self.cell.post_system(_continue_children)


def _continue_children(cell: Cell) -> None:
    walk = cell.children_stop
    if walk is not None:
        walk.next_child()


def _nothing() -> None:
    pass


class Restart:
    """One child's restart, asked for by its supervisor: teardown, rebuild, report.

    Teardown (`teardown`, a system message in the child's turn):
    `quiesced` (handlers cancelled) -> `on_stop_ended` -> `pre_restart_ended`
    -> `children_stopped`. Rebuild (`rebuild`, in the same message when
    `rebuild_after` is set, else a later one): ``__init__`` ->
    `post_restart_ended`. Each phase ends with `done`, which tells the
    supervisor (`report`). A cell that stops meanwhile skips the rest: stopping
    takes over, and the supervisor is told at once.
    """

    __slots__ = ("cell", "exc", "rebuild_after", "report")

    def __init__(
        self, cell: Cell, exc: BaseException | None, report: Callable[[], None], *, rebuild_after: bool
    ) -> None:
        self.cell = cell
        # What the old instance failed with (None: a permanent child exited).
        self.exc = exc
        # The supervisor's next step: called once per phase.
        self.report = report
        # Whether the rebuild follows the teardown in the same system message.
        self.rebuild_after = rebuild_after

    # -- teardown --------------------------------------------------------------------

    def teardown(self, cell: Cell) -> None:
        """End the current instance: its handlers, timers, hooks and children (a system message)."""
        if not cell.is_running():
            self.done()
            return
        cell.suspended = True
        cell.quiesce(self.quiesced)

    def quiesced(self) -> None:
        """The handlers have ended: cancel the timers, run ``on_stop`` unless the instance failed."""
        cell = self.cell
        if not cell.is_running():  # stopped meanwhile: stopping takes over
            self.done()
            return
        cell.cancel_timers()
        old = cell.actor
        call_on_stop = old is not None and not cell.failed
        cell.failed = True  # torn down: on_stop is called here or not at all, never twice
        if call_on_stop:
            cell.hook("on_stop", old.on_stop, self.on_stop_ended, cancellable=False)
        else:
            self.on_stop_ended(None)

    def on_stop_ended(self, stop_exc: BaseException | None) -> None:
        """``on_stop`` has ended: run ``pre_restart``, if the actor has one."""
        cell = self.cell
        if stop_exc is not None:
            report(logging.ERROR, f"Unhandled exception in on_stop of {cell.ref}:", exc_info_of(stop_exc))
        if not cell.is_running():  # stopped meanwhile: stopping takes over
            self.done()
            return
        pre_restart = getattr(cell.actor, "pre_restart", None)
        if pre_restart is not None:
            exc = self.exc
            cell.hook("pre_restart", lambda: pre_restart(exc), self.pre_restart_ended, cancellable=False)
        else:
            self.pre_restart_ended(None)

    def pre_restart_ended(self, hook_exc: BaseException | None) -> None:
        """``pre_restart`` has ended: stop the children."""
        cell = self.cell
        if hook_exc is not None:
            report(logging.ERROR, f"Unhandled exception in pre_restart of {cell.ref}:", exc_info_of(hook_exc))
        cell.failed = True
        if not cell.is_running():
            self.done()
            return
        cell.stop_children(self.children_stopped)

    def children_stopped(self) -> None:
        """The teardown is over: the old instance refuses what it still holds; rebuild now, or tell the supervisor."""
        self.cell.release_held("was restarted")
        if self.rebuild_after:
            self.rebuild(self.cell)
        else:
            self.done()

    # -- rebuild -------------------------------------------------------------------

    def rebuild(self, cell: Cell) -> None:
        """Build a fresh instance into the cell, run ``post_restart`` (or ``on_start``), resume."""
        if not cell.is_running():
            self.done()
            return
        cell.incarnation += 1
        try:
            actor = cell.construct(*cell.spec)  # type: ignore[misc]  # a restartable cell has its spec
        except Exception:  # noqa: BLE001
            cell.actor = None
            cell.fail(sys.exc_info(), during_start=True)
            self.done()
            return
        cell.actor = actor
        cell.failed = False
        cell.suspended = False
        post_restart = getattr(actor, "post_restart", None)
        exc = self.exc
        call: Callable[[], Any] = actor.on_start if post_restart is None else (lambda: post_restart(exc))
        cell.hook("post_restart", call, self.post_restart_ended, cancellable=True)

    def post_restart_ended(self, exc: BaseException | None) -> None:
        """``post_restart`` has ended: a failure there fails the new instance; tell the supervisor."""
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self.cell.fail(exc_info_of(exc), during_start=True)
        self.done()

    def done(self) -> None:
        """Tell the supervisor this phase is over."""
        self.report()
