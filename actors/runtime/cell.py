"""The cell: the stable home of one actor, whatever its execution mode.

A cell owns what must outlive any one instance of an actor: its mailbox, its
address (the `ActorRef`), its place in the tree (parent and children), its
timers and its scheduling state. pykka's `ActorRef.actor_inbox` *is* the cell.

How a message is handled (the hot path)::

    ref.tell(m) -> queue.append(m) -> sched.acquire(False) ? executor.submit(cell)
    executor thread -> cell.run(): up to `throughput` items, then release

Mailbox items are either a bare message (a tell: no envelope is allocated,
~15% of a tell's cost) or a pykka `Envelope` (an ask, with its reply future,
or a tell with a `Receipt`: a failure of its handler still fails the actor).

`sched` is a plain lock used as an atomic test-and-set: whoever acquires it
owns the right to run the actor, and it stays held from submission until the
end of the turn. So one actor handles one message at a time, in order, in
every mode; and because `run` re-checks the queue *after* releasing, a
message that arrives while a turn is ending is never stranded.

Executors are what differ between modes: a shared `DispatcherPool` (pooled),
one dedicated thread (thread), an event loop (asyncio). All of them just call
`cell.run()` with `sched` held.

Stopping is asynchronous, Akka-style, so that no executor thread ever blocks
waiting for another actor: a stopping cell stops its children youngest first,
one at a time, and resumes when each has terminated; only then does it run
``on_stop`` and terminate. A child on the same dispatcher pool is stopped
inline, on the parent's dispatcher thread, which keeps a shutdown of 100,000
pooled actors to one pass.
"""

from __future__ import annotations

import sys
import threading
from _thread import allocate_lock
from typing import TYPE_CHECKING, Any

import pykka
from loguru import logger
from pykka import ActorDeadError, ActorRegistry
from pykka._envelope import Envelope
from pykka.messages import ProxyCall, ProxyGetAttr, ProxySetAttr, _ActorStop

from actors.runtime.deadletters import DeadLetterReason
from actors.runtime.errors import MailboxFullError, RestartIntensityError
from actors.runtime.future import Receipt
from actors.runtime.supervision import (
    DEFAULT_POLICY,
    Directive,
    RestartLog,
    RestartType,
    SupervisionPolicy,
    SupervisionStrategy,
    Terminated,
)
from actors.runtime.timers import Timers, _TimerFired

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.runtime.mailbox import MessageQueue
    from actors.runtime.ref import ActorRef
    from actors.runtime.system import ActorSystem

__all__ = [
    "RUNNING",
    "STARTING",
    "STOPPING",
    "TERMINATED",
    "Cell",
    "bind_constructing",
    "current_executor",
    "unwrap",
]

# Cell states; they only move forward.
STARTING, RUNNING, STOPPING, TERMINATED = range(4)

# How `_process` treats a message, by its exact class. Anything else goes to
# on_receive: one dict lookup per message on the hot path.
_PROXY, _STOP_MESSAGE, _TIMER, _TERMINATED = 1, 2, 3, 4


class _SelfStop(_ActorStop):
    """`Actor.stop()`: the actor ends itself, a normal exit (a permanent child is restarted)."""


_KINDS: dict[type, int] = {
    ProxyCall: _PROXY,
    ProxyGetAttr: _PROXY,
    ProxySetAttr: _PROXY,
    _ActorStop: _STOP_MESSAGE,
    _SelfStop: _STOP_MESSAGE,
    _TimerFired: _TIMER,
    Terminated: _TERMINATED,
}
_pykka_handle_receive = pykka.Actor._handle_receive  # noqa: SLF001 - reuse pykka's proxy dispatch

_local = threading.local()
_constructing = threading.local()


def bind_constructing(cell: Cell | None) -> Cell | None:
    """Make `cell` the one `Actor.__init__` binds to on this thread; return the previous one."""
    previous = getattr(_constructing, "cell", None)
    _constructing.cell = cell
    return previous


def constructing_cell() -> Cell | None:
    """Return the cell an actor constructed on this thread right now belongs to, if any."""
    return getattr(_constructing, "cell", None)


def current_executor() -> object | None:
    """Return the executor whose thread is running this code, if any."""
    return getattr(_local, "executor", None)


def inline_depth() -> int:
    """Return how many inline asks are running nested on this thread."""
    return getattr(_local, "inline_depth", 0)


def bind_executor(executor: object) -> None:
    """Mark the calling thread as one of `executor`'s threads (called once per thread)."""
    _local.executor = executor


class _InlineDrain:
    """The executor of a terminated cell: late mail is dead-lettered on the sender's thread."""

    __slots__ = ()

    def submit(self, cell: Cell) -> None:
        cell.run()


_DRAIN = _InlineDrain()


class Cell:
    """One actor's mailbox, address, tree position and scheduling state.

    Thread contract: `put`, `post_system`, `post_internal`, `on_terminated`
    and `remove_on_terminated` may be called from any thread. Everything else runs only while holding
    `sched`, i.e. on the executor's thread during a turn.
    """

    __slots__ = (
        "__weakref__",
        "_after_children",
        "_pending_stop",
        "_restarts",
        "_stopped_event",
        "_timers",
        "_watchers",
        "_watching",
        "actor",
        "actor_class",
        "alive",
        "children",
        "executor",
        "failed",
        "incarnation",
        "name",
        "parent",
        "pykka_registered",
        "queue",
        "reason",
        "ref",
        "restart",
        "sched",
        "spec",
        "state",
        "stop_replies",
        "suspended",
        "sysq",
        "system",
        "throughput",
        "urn",
    )

    def __init__(
        self,
        system: ActorSystem,
        actor_class: type[pykka.Actor],
        executor: Any,
        *,
        name: str | None,
        parent: Cell | None,
        urn: str,
        throughput: int,
        ref_class: Callable[[Cell], ActorRef[Any]],
    ) -> None:
        self.system = system
        self.actor_class = actor_class
        self.executor = executor
        self.name = name
        self.parent = parent
        self.urn = urn
        self.throughput = throughput
        self.ref = ref_class(self)
        self.actor: Any = None
        # Invariant: held from the moment the cell is submitted to an executor
        # until the end of that turn. A new cell starts held: it is being built.
        self.sched = allocate_lock()
        self.sched.acquire()
        # Invariant: `state` only moves forward; `alive` turns False exactly once,
        # when stopping begins, and from then on tell/ask raise ActorDeadError.
        self.state = STARTING
        self.alive = True
        # Invariant: True while the current instance must not get on_stop: it
        # failed, or it was torn down for a restart.
        self.failed = False
        # Invariant: while True no user message is handled (a failed child
        # waiting for its supervisor's directive, or one being restarted);
        # system messages still run and mail keeps queueing.
        self.suspended = False
        # None for a temporary child (never restarted); else its restart type,
        # and `spec` holds the constructor arguments a restart uses again.
        self.restart: RestartType | None = None
        self.spec: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        # Counts instances: a failure report from an older instance is stale.
        self.incarnation = 0
        # Why the actor terminated: None (a normal stop) or the exception it failed with.
        self.reason: BaseException | None = None
        self.queue: MessageQueue = None  # type: ignore[assignment]  # set by the system right after
        # System messages: callables run with this cell before any user message.
        self.sysq: list[Callable[[Cell], None]] = []
        # Guarded by system.tree_lock; insertion-ordered, so reversed() is youngest first.
        self.children: dict[Cell, None] | None = None
        self.stop_replies: list[pykka.Future[Any]] | None = None
        # Guarded by system.tree_lock: key -> callback run once this cell terminates.
        self._watchers: dict[object, Callable[[Cell], None]] | None = None
        # The cells this actor watches (death watch); only its own turn touches it.
        self._watching: dict[Cell, None] | None = None
        # What to do once the children are stopped (stopping, or a restart's teardown).
        self._after_children: Callable[[], None] | None = None
        # As a supervisor: recent restarts, and the group restart under way.
        self._restarts: _Supervising | None = None
        self._timers: Timers | None = None
        # Children still to stop, youngest last; set when stopping begins.
        self._pending_stop: list[Cell] | None = None
        self._stopped_event: threading.Event | None = None
        self.pykka_registered = False

    def __repr__(self) -> str:
        return f"<Cell {self.ref} state={self.state}>"

    # -- the pykka inbox interface ---------------------------------------------

    def put(self, envelope: Envelope[Any], /) -> None:
        """Queue an envelope and make sure the actor gets a turn (pykka inbox interface)."""
        self.queue.append(envelope)
        if self.sched.acquire(False):
            self.executor.submit(self)

    def get(self) -> Envelope[Any]:
        """Take the next item as an envelope (pykka inbox interface; IndexError when empty)."""
        item = self.queue.popleft()
        return item if item.__class__ is Envelope else Envelope(item)

    def empty(self) -> bool:
        """Return whether no message is waiting."""
        return not len(self.queue)

    # -- posting from any thread ---------------------------------------------

    def post_system(self, message: Callable[[Cell], None], *, inline: bool = False) -> None:
        """Queue a system message (runs before user messages) and schedule the cell.

        With `inline`, a cell served by the calling thread's own executor is run
        right here instead of being submitted (used to stop children quickly).
        """
        self.sysq.append(message)
        if self.sched.acquire(False):
            if inline and self.executor is current_executor():
                self.run()
            else:
                self.executor.submit(self)

    def post_internal(self, message: Any) -> None:
        """Queue a message the runtime sends (a timer's, a `Terminated`); never blocks.

        Timers fire on the scheduler's thread and `Terminated` on whichever
        thread ended the watched actor: neither may wait for room in a bounded
        mailbox, so a full one turns the message into a dead letter.
        """
        if not self.alive:
            return
        queue = self.queue
        try:
            if hasattr(queue, "_spec"):  # a bounded mailbox
                queue.append(message, may_block=False)  # type: ignore[call-arg]
            else:
                queue.append(message)
        except MailboxFullError as exc:
            self.reject(message, DeadLetterReason.MAILBOX_OVERFLOW, exc)
            return
        if self.sched.acquire(False):
            self.executor.submit(self)

    def on_terminated(self, callback: Callable[[Cell], None], *, key: object = None) -> None:
        """Call `callback(cell)` once the actor has terminated; at once if it has.

        `key` (default: the callback) names the registration for `remove_on_terminated`.
        """
        with self.system.tree_lock:
            if self.state != TERMINATED:
                if self._watchers is None:
                    self._watchers = {}
                self._watchers[callback if key is None else key] = callback
                return
        callback(self)

    def remove_on_terminated(self, key: object) -> None:
        """Forget the `on_terminated` callback registered under `key`, if any."""
        with self.system.tree_lock:
            if self._watchers is not None:
                self._watchers.pop(key, None)

    # -- death watch (called in the watcher's turn) ------------------------------

    def watch(self, target: Cell) -> None:
        """Deliver `Terminated(target.ref, reason)` to this actor when `target` terminates."""
        if self._watching is None:
            self._watching = {}
        if target in self._watching:
            return
        self._watching[target] = None
        target.on_terminated(self._watched_terminated, key=self)

    def unwatch(self, target: Cell) -> None:
        """Stop watching `target`; a `Terminated` already queued for it is dropped."""
        if self._watching and target in self._watching:
            del self._watching[target]
            target.remove_on_terminated(self)

    def _watched_terminated(self, target: Cell) -> None:
        self.post_internal(Terminated(target.ref, target.reason))

    def stopped_event(self) -> threading.Event:
        """Return an event that is set once the actor stops being alive."""
        with self.system.tree_lock:
            if self._stopped_event is None:
                self._stopped_event = threading.Event()
                if not self.alive:
                    self._stopped_event.set()
            return self._stopped_event

    @property
    def timers(self) -> Timers:
        """Return the actor's timers, created on first use."""
        if self._timers is None:
            self._timers = Timers(self)
        return self._timers

    def construct(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Instantiate `actor_class` bound to this cell (at spawn, and again at each restart).

        Raises:
            TypeError: the class's ``__init__`` did not call ``super().__init__()``.
            Exception: whatever the constructor raised.
        """
        previous = bind_constructing(self)  # a context manager here costs ~1 µs per spawn
        try:
            actor = self.actor_class(*args, **kwargs)
        finally:
            bind_constructing(previous)
        if actor.__dict__.get("_troupe_cell") is not self:
            msg = (
                f"{self.actor_class.__qualname__}.__init__ did not call super().__init__(); "
                "call it so the actor is bound to its mailbox"
            )
            raise TypeError(msg)
        return actor

    # -- a turn ----------------------------------------------------------------

    def run(self, until: pykka.Future[Any] | None = None) -> None:
        """Run one turn. The caller holds `sched`; this releases it.

        With `until`, the turn runs on the calling thread for a blocking ask
        (see `ActorRef.ask`) and ends once `until` has its answer.
        """
        if until is not None:
            _local.inline_depth = getattr(_local, "inline_depth", 0) + 1
        try:
            if self.state == STARTING:
                self._start()
            if self.sysq:
                self._process_system()
            state = self.state
            if state == RUNNING:
                if not self.suspended:
                    self._process(self.throughput, until)
            elif state == TERMINATED:
                self._drain()
        except BaseException:  # noqa: BLE001 - an executor thread must survive anything
            logger.opt(exception=True).critical("troupe runtime error while running {}; please report it", self.ref)
        finally:
            if until is not None:
                _local.inline_depth -= 1
            self.sched.release()
        # Re-check after releasing: a message that arrived during the turn found
        # `sched` held and did not schedule; whoever acquires now does.
        if (self.sysq or (len(self.queue) and self.state != STOPPING and not self.suspended)) and self.sched.acquire(
            False
        ):
            self.executor.submit(self)

    def _start(self) -> None:
        self.state = RUNNING
        try:
            self.actor.on_start()
        except Exception:  # noqa: BLE001
            self._fail(sys.exc_info(), during_start=True)
        except BaseException:  # noqa: BLE001
            self._fatal(sys.exc_info())

    def _process_system(self) -> None:
        sysq = self.sysq
        while sysq:
            sysq.pop(0)(self)

    def _process(self, limit: int, until: pykka.Future[Any] | None = None) -> None:
        pop = self.queue.popleft
        actor = self.actor
        kinds = _KINDS
        sysq = self.sysq
        while limit > 0 and not sysq:
            limit -= 1
            try:
                item = pop()
            except IndexError:
                return
            if item.__class__ is Envelope:
                message = item.message
                reply_to = item.reply_to
            else:
                message = item
                reply_to = None
            try:
                kind = kinds.get(message.__class__)
                if kind is None:
                    result = actor.on_receive(message)
                elif kind == _PROXY:
                    result = _pykka_handle_receive(actor, message)
                elif kind == _STOP_MESSAGE:
                    self._begin_stop(reply_to, self_stop=message.__class__ is _SelfStop)
                    return
                elif kind == _TIMER:
                    if self._timers is None or not self._timers._accept(message):  # noqa: SLF001
                        continue
                    actor.on_receive(message.message)
                    continue
                else:  # Terminated: only while still watching (unwatch drops it)
                    watching = self._watching
                    target = message.ref._cell  # noqa: SLF001
                    if watching is None or target not in watching:
                        continue
                    del watching[target]
                    result = actor.on_receive(message)
            except Exception:  # noqa: BLE001
                if reply_to is not None and not isinstance(reply_to, Receipt):
                    exc_info = sys.exc_info()
                    if self.parent is not None and self._policy_of_parent().fails_on_ask(exc_info[1]):
                        # Fail first, so the supervisor hears of it before the asker does.
                        self._fail(exc_info, message)
                        reply_to.set_exception(exc_info)
                        return
                    logger.opt(exception=True).info("Exception returned from {} to caller:", self.ref)
                    reply_to.set_exception(exc_info)
                    if reply_to is until:
                        return
                else:
                    exc_info = sys.exc_info()
                    self._fail(exc_info, message)
                    if reply_to is not None:  # a tell with a receipt: it fails the actor as any tell, then says so
                        reply_to.set_exception(exc_info)
                    return
            except BaseException:  # noqa: BLE001
                self._fatal(sys.exc_info())
                return
            else:
                if reply_to is not None:
                    reply_to.set(result)
                    if reply_to is until:
                        return

    # -- failure and supervision (the child's side) --------------------------------

    def _fail(self, exc_info: Any, message: Any = None, *, during_start: bool = False) -> None:
        """An exception escaped a tell handler or a start hook: the single failure entry point.

        Logs it, dead-letters the message, calls ``on_failure`` (not for a start
        hook), then either stops the actor (pykka semantics: a temporary child,
        the default) or suspends it and reports to its supervisor.
        """
        exc = exc_info[1]
        logger.opt(exception=exc_info).error("Unhandled exception in {}:", self.ref)
        if message is not None:
            self.system.dead_letters.record(message, self.ref, DeadLetterReason.HANDLER_FAILED, exc)
        self.failed = True
        supervised = self.restart is not None and self.parent is not None
        if not supervised:
            self._mark_dead()
        if not during_start and self.actor is not None:
            try:
                self.actor.on_failure(*exc_info)
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Unhandled exception in on_failure of {}:", self.ref)
        if supervised:
            self._report(exc)
            return
        self.reason = exc
        self.state = STOPPING
        self._stop_children(self._finish_stop)

    def _report(self, exc: BaseException | None) -> None:
        """Suspend and ask the supervisor what to do (`exc` None: a permanent child exited)."""
        self.suspended = True
        incarnation = self.incarnation
        self.parent.post_system(lambda parent: parent._child_failed(self, exc, incarnation))  # type: ignore[union-attr]  # noqa: SLF001

    def _policy_of_parent(self) -> SupervisionPolicy:
        return getattr(self.parent.actor, "supervision_policy", DEFAULT_POLICY)  # type: ignore[union-attr]

    def _teardown(self, exc: BaseException | None, then: Callable[[], None]) -> None:
        """End the current instance for a restart: its timers, hooks and children; then `then()`."""
        if self.state != RUNNING:
            then()
            return
        self.suspended = True
        if self._timers is not None:
            self._timers.cancel_all()
        old = self.actor
        if old is not None:
            if not self.failed:
                try:
                    old.on_stop()
                except Exception:  # noqa: BLE001
                    logger.opt(exception=True).error("Unhandled exception in on_stop of {}:", self.ref)
            pre_restart = getattr(old, "pre_restart", None)
            if pre_restart is not None:
                try:
                    pre_restart(exc)
                except Exception:  # noqa: BLE001
                    logger.opt(exception=True).error("Unhandled exception in pre_restart of {}:", self.ref)
        self.failed = True
        self._stop_children(then)

    def _rebuild(self, exc: BaseException | None, then: Callable[[], None]) -> None:
        """Build a fresh instance into this cell, run ``post_restart``, resume; then `then()`."""
        if self.state != RUNNING:
            then()
            return
        self.incarnation += 1
        try:
            actor = self.construct(*self.spec)  # type: ignore[misc]
        except Exception:  # noqa: BLE001
            self.actor = None
            self._fail(sys.exc_info(), during_start=True)
            then()
            return
        self.actor = actor
        self.failed = False
        self.suspended = False
        try:
            post_restart = getattr(actor, "post_restart", None)
            if post_restart is not None:
                post_restart(exc)
            else:
                actor.on_start()
        except Exception:  # noqa: BLE001
            self._fail(sys.exc_info(), during_start=True)
        then()

    def _resume(self) -> None:
        if self.state == RUNNING:
            self.failed = False
            self.suspended = False
            group = self._restarts.group if self._restarts is not None else None
            if group is not None and group.parked:
                group.parked = False
                self._group_step()

    # -- failure and supervision (the supervisor's side) ----------------------------

    def _child_failed(self, child: Cell, exc: BaseException | None, incarnation: int) -> None:
        """Decide what happens to a failed child (a system message in this, the parent's, turn)."""
        if self.state != RUNNING or child.state != RUNNING or child.incarnation != incarnation:
            return  # we are stopping (the child will be too), or the report is stale
        sup = self._supervising()
        if sup.group is not None:
            sup.deferred.append((child, exc, incarnation))
            return
        policy: SupervisionPolicy = getattr(self.actor, "supervision_policy", DEFAULT_POLICY)
        if exc is None or child.actor is None:
            directive = Directive.RESTART  # a normal exit, or no instance left to resume
        else:
            try:
                directive = policy.decider(exc)
                if not isinstance(directive, Directive):
                    msg = f"the decider of {self.ref} returned {directive!r}, not a Directive"
                    raise TypeError(msg)  # noqa: TRY301
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Decider of {} failed on {!r}; escalating", self.ref, exc)
                directive = Directive.ESCALATE
        if directive is Directive.RESUME:
            child.post_system(_resume)
        elif directive is Directive.STOP:
            child.reason = exc
            child.post_system(STOP)
        elif directive is Directive.ESCALATE:
            self._escalate(child, exc)  # type: ignore[arg-type]
        else:
            exceeded, attempt = sup.log.record(self.system.clock.now(), child.urn, policy)
            if exceeded:
                err = RestartIntensityError(
                    f"{self.ref} gave up: more than {policy.max_restarts} restart(s) within "
                    f"{policy.within_seconds} s; the last failure was in {child.ref}: {exc!r}. "
                    "Fix the failing actor, or raise max_restarts / within_seconds in its supervision_policy"
                )
                err.__cause__ = exc
                self._escalate(child, err)
                return
            delay = policy.backoff.delay(attempt) if policy.backoff is not None else 0.0
            sup.group = _GroupRestart(self._restart_group(child, policy), exc, delay)
            self._group_step()

    def _restart_group(self, child: Cell, policy: SupervisionPolicy) -> list[Cell]:
        if policy.strategy is SupervisionStrategy.ONE_FOR_ONE:
            return [child]
        with self.system.tree_lock:
            children = list(self.children or ())
        if policy.strategy is SupervisionStrategy.REST_FOR_ONE:
            children = children[children.index(child) :] if child in children else [child]
        return [c for c in children if c.state < STOPPING]

    def _group_step(self) -> None:
        """Advance the group restart by one child: teardown in reverse start order, then rebuild in order.

        Each step is one system message to one child; the child posts
        `_group_step` back to us when it is done, so the order holds across
        executors and no thread ever waits for another.
        """
        sup = self._restarts
        group = sup.group if sup is not None else None
        if group is None or self.state != RUNNING:
            return
        if self.failed:  # we failed meanwhile: our parent decides; a resume goes on from here
            group.parked = True
            return
        # Busy restarting: user messages wait, as an Erlang supervisor is busy too.
        self.suspended = True
        step = self._continue_group
        if group.teardown:
            child = group.teardown.pop()
            if child.restart is None:  # temporary: stopped, never restarted
                group.members.remove(child)
                child.post_system(STOP)
                child.on_terminated(lambda _c: step())
            else:
                exc = group.exc
                if not group.teardown and group.delay == 0 and child is group.members[0]:
                    # The last one torn down is the first one rebuilt: one
                    # system message does both (a one_for_one restart is then
                    # three hand-offs: report, restart, done).
                    group.next = 1
                    child.post_system(lambda c: c._teardown(exc, lambda: c._rebuild(exc, step)))  # noqa: SLF001
                else:
                    child.post_system(lambda c: c._teardown(exc, step))  # noqa: SLF001
            return
        if group.delay > 0:
            delay, group.delay = group.delay, 0.0
            self.suspended = False  # not busy while the backoff runs
            self.system.scheduler.call_later(delay, step)
            return
        if group.next < len(group.members):
            child = group.members[group.next]
            group.next += 1
            exc = group.exc
            child.post_system(lambda c: c._rebuild(exc, step))  # noqa: SLF001
            return
        sup.group = None
        self.suspended = False
        deferred, sup.deferred = sup.deferred, []
        for child, exc, incarnation in deferred:
            self._child_failed(child, exc, incarnation)

    def _continue_group(self) -> None:
        self.post_system(_group_step)

    def _escalate(self, child: Cell, exc: BaseException) -> None:
        """Give up on `child`: at the root, stop it and log; elsewhere fail ourselves with `exc`."""
        if self.parent is None:  # the system's root actor never fails
            logger.opt(exception=exc).error("{} stopped for good: its failure reached the root", child.ref)
            child.reason = exc
            child.post_system(STOP)
            return
        # Erlang: a supervisor that gives up terminates its children, then exits.
        self.suspended = True
        self._stop_children(lambda: self._fail((type(exc), exc, exc.__traceback__)))

    def _supervising(self) -> _Supervising:
        if self._restarts is None:
            self._restarts = _Supervising()
        return self._restarts

    # -- stopping --------------------------------------------------------------

    def _fatal(self, exc_info: Any) -> None:
        """A BaseException escaped a handler: stop this actor and every actor (as pykka)."""
        logger.opt(exception=exc_info).error(
            "{!r} in {}: stopping every actor of system {!r}", exc_info[1], self.ref, self.system.name
        )
        self._begin_stop()
        self.system._stop_all_actors()  # noqa: SLF001

    def _begin_stop(self, reply_to: pykka.Future[Any] | None = None, *, self_stop: bool = False) -> None:
        if reply_to is not None:
            if self.stop_replies is None:
                self.stop_replies = []
            self.stop_replies.append(reply_to)
        if self.state >= STOPPING:
            return
        if self_stop and self.restart is RestartType.PERMANENT and self.parent is not None:
            self._report(None)  # Erlang: a permanent child that exits is restarted
            return
        self._mark_dead()
        self.state = STOPPING
        after = self._after_children
        if after is None:
            self._stop_children(self._finish_stop)
        else:
            # A restart's teardown is stopping the children: finish stopping
            # instead, then let the supervisor's group restart go on.
            self._after_children = lambda: (self._finish_stop(), after())

    def _stop_children(self, then: Callable[[], None]) -> None:
        """Stop every child, youngest first, one at a time; then call `then()` (in a later turn maybe)."""
        self._after_children = then
        self._continue_children()

    def _continue_children(self) -> None:
        # A child that cannot be stopped right here calls us back (a system
        # message) when it has terminated; then we go on with the next one.
        # The children are snapshotted once: a stopping cell accepts no new
        # children, and walking a dict from its end after many deletions is
        # O(n) per step.
        pending = self._pending_stop
        if pending is None:
            with self.system.tree_lock:
                pending = self._pending_stop = list(self.children or ())
        while pending:
            child = pending[-1]
            if child.state != TERMINATED:
                child.post_system(_stop, inline=True)
                if child.state != TERMINATED:
                    child.on_terminated(self._child_terminated)
                    return
            pending.pop()
        self._pending_stop = None
        then, self._after_children = self._after_children, None
        then()  # type: ignore[misc]

    def _child_terminated(self, _child: Cell) -> None:
        self.post_system(_continue_children)

    def _finish_stop(self) -> None:
        if self._timers is not None:
            self._timers.cancel_all()
        if not self.failed:
            try:
                self.actor.on_stop()
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Unhandled exception in {}:", self.ref)
        self._terminate()

    def _mark_dead(self) -> None:
        if not self.alive:
            return
        self.alive = False
        if self._stopped_event is not None:
            self._stopped_event.set()
        if self.pykka_registered:
            ActorRegistry.unregister(self.ref)

    def _terminate(self) -> None:
        self.executor = _DRAIN
        self._drain()
        for reply_to in self.stop_replies or ():
            reply_to.set(True)
        self.stop_replies = None
        system = self.system
        with system.tree_lock:
            self.state = TERMINATED
            if self.parent is not None and self.parent.children is not None:
                self.parent.children.pop(self, None)
            if self.name is not None and system.registry.get(self.name) is self:
                del system.registry[self.name]
            watchers, self._watchers = self._watchers, None
        for target in self._watching or ():
            target.remove_on_terminated(self)
        self._watching = None
        for callback in (watchers or {}).values():
            try:
                callback(self)
            except Exception:  # noqa: BLE001
                logger.opt(exception=True).error("Termination callback {!r} of {} failed", callback, self.ref)

    def _drain(self) -> None:
        pop = self.queue.popleft
        while True:
            try:
                item = pop()
            except IndexError:
                return
            message, reply_to = unwrap(item)
            if isinstance(message, _ActorStop):
                if reply_to is not None:
                    reply_to.set(True)  # "was being stopped at the time of the call"
            elif message.__class__ is not _TimerFired and message.__class__ is not Terminated:
                self.reject(item, DeadLetterReason.QUEUED_AT_STOP)

    def reject(self, item: Any, reason: DeadLetterReason, exc: BaseException | None = None) -> None:
        """Record a mailbox item as a dead letter; an ask gets `exc` (default ActorDeadError)."""
        message, reply_to = unwrap(item)
        self.system.dead_letters.record(message, self.ref, reason, exc)
        if reply_to is not None:
            if exc is None:
                exc = ActorDeadError(f"{self.ref} stopped before handling the message")
            reply_to.set_exception((type(exc), exc, None))


def unwrap(item: Any) -> tuple[Any, pykka.Future[Any] | None]:
    """Return (message, reply future or None) of a mailbox item."""
    if item.__class__ is Envelope:
        return item.message, item.reply_to
    return item, None


def _stop(cell: Cell) -> None:
    cell._begin_stop()  # noqa: SLF001


def _continue_children(cell: Cell) -> None:
    if cell._after_children is not None:  # noqa: SLF001
        cell._continue_children()  # noqa: SLF001


def _resume(cell: Cell) -> None:
    cell._resume()  # noqa: SLF001


def _group_step(cell: Cell) -> None:
    cell._group_step()  # noqa: SLF001


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


class _Supervising:
    """A cell's state as a supervisor; only its own turn touches it."""

    __slots__ = ("deferred", "group", "log")

    def __init__(self) -> None:
        self.log = RestartLog()
        # Invariant: at most one group restart at a time; failures reported
        # meanwhile wait in `deferred`, in arrival order.
        self.group: _GroupRestart | None = None
        self.deferred: list[tuple[Cell, BaseException | None, int]] = []


STOP = _stop
"""The system message that stops a cell now, ahead of queued user messages."""
