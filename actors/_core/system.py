"""`ActorSystem`: owns every actor, thread and timer it starts.

    with ActorSystem() as system:
        ref = system.spawn(Greeter, name="greeter")
        ref.ask("hello")
    # leaving the block stopped every actor and joined every thread

A system owns its dispatcher threads, the threads of its thread-mode actors,
its timer thread, its event loop thread (started when the first asyncio actor
is spawned), its name registry, its dead letters and the tree of actors under
its root guardian. Two systems in one process share nothing.

From a coroutine, use the system as an async context manager; it can also
run its asyncio actors on the loop it is given instead of a thread of its own::

    async def main():
        async with ActorSystem(loop=asyncio.get_running_loop()) as system:
            ref = system.spawn(Agent)              # an actor with async handlers
            answer = await ref.ask("hi", block=False)

Shutdown order: children before parents, siblings youngest first (reverse
start order), one at a time; each actor's ``on_stop`` runs after all of its
children have stopped.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import itertools
import os
import sys
import threading
import weakref
from collections.abc import Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self

import pykka
from loguru import logger

from actors._core import logbridge
from actors._core.actor import PooledActor, concrete_class
from actors._core.cell import STOP, Cell
from actors._core.checks import check_count, check_interface, check_seconds
from actors._core.clock import Clock, MonotonicClock
from actors._core.deadletters import DeadLetters
from actors._core.events import AuditChannel
from actors._core.executors import (
    DEFAULT_DISPATCHER,
    DEFAULT_SLOW_CALLBACK_DURATION,
    AsyncioExecutor,
    DispatcherPool,
    Executor,
    HeldDispatcherWatch,
    StopPacer,
    ThreadExecutor,
    current_executor,
    inline_depth,
)
from actors._core.mailbox import FifoMailbox, MailboxSpec
from actors._core.observe import set_tracer
from actors._core.ref import ActorRef
from actors._core.supervision import DEFAULT_POLICY, RestartType, SupervisionPolicy, restart_type
from actors._core.timers import Scheduler
from actors.errors import ActorNameTakenError, DispatcherError, MetricsOffError, SystemShutdownError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from actors._core.observe import Probe
    from actors._core.tracing import Tracer

__all__ = ["DEFAULT_THROUGHPUT", "ActorSystem", "default_system"]

DEFAULT_THROUGHPUT = 32
"""Messages a pooled actor may handle per turn before yielding its dispatcher thread.

Akka's default is 5; a turn costs one run-queue round trip (~0.4 µs here),
so 32 keeps that under 2% of a cheap handler while a busy actor still lets
others run every ~30 µs.
"""

_FIFO = FifoMailbox()
_system_ids = itertools.count(1)
_live_systems: weakref.WeakSet[ActorSystem] = weakref.WeakSet()

_RUNNING, _STOPPING, _SHUT_DOWN = "running", "stopping", "shut down"
_NO_DISPATCHER = frozenset({"thread", "asyncio"})


class _Guardian(PooledActor):
    """The root supervisor: every top-level actor is its child.

    It never fails: a child it gives up on (escalation, restart intensity)
    is stopped for good and logged.
    """

    def __init__(self, policy: SupervisionPolicy) -> None:
        super().__init__()
        self.supervision_policy = policy

    def on_receive(self, message: Any) -> None:
        pass


class ActorSystem:
    """A set of actors with the threads, timers and registry that serve them.

    Args:
        name: names the system's threads and appears in errors (default
            ``system-<n>``).
        dispatchers: the pooled dispatcher's threads: an int (the size of the
            ``"default"`` group; default: the CPU count), or a mapping of
            group name to size, e.g. ``{"default": 2, "blocking": 32}``: each
            group is a pool of threads of its own (Akka's dispatchers), chosen
            at spawn with ``dispatcher="blocking"`` (or the class attribute
            ``dispatcher``). A mapping without ``"default"`` gets one of CPU
            count threads. The default group starts with the system; another
            starts its threads when its first actor is spawned.
        throughput: messages a pooled actor handles per turn (default 32).
        clock: where timers read the time (default `MonotonicClock`; tests
            pass a `ManualClock`).
        dead_letters_kept: how many recent dead letters are kept for `recent()`.
        root_policy: how the root supervises top-level actors spawned with a
            restart type other than ``temporary`` (default `SupervisionPolicy()`).
        loop: a running asyncio event loop for the asyncio actors (default:
            the system starts its own, on a thread, when the first asyncio
            actor is spawned). A given loop is never stopped or closed by the
            system; shut the system down before the loop stops (``async with``
            or `ashutdown`).
        slow_callback_duration: seconds an actor may hold what it runs on in
            one go before a warning is logged naming it (default 0.1, as
            asyncio's debug mode; None: never warn), measured on `clock`: an
            asyncio actor the event loop (a turn, one step of a handler, every
            time), a pooled actor of the default group a dispatcher thread (one
            turn; once per actor class, sampled: see `HeldDispatcherWatch`).

    Thread contract: every public method may be called from any thread,
    except `shutdown`, which must not be called from a thread of this system
    nor from the thread running its given loop (await `ashutdown` there).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        dispatchers: int | Mapping[str, int] | None = None,
        throughput: int = DEFAULT_THROUGHPUT,
        clock: Clock | None = None,
        dead_letters_kept: int = 1000,
        root_policy: SupervisionPolicy = DEFAULT_POLICY,
        loop: asyncio.AbstractEventLoop | None = None,
        slow_callback_duration: float | None = DEFAULT_SLOW_CALLBACK_DURATION,
    ) -> None:
        check_count("throughput", throughput, minimum=1, owner="ActorSystem")
        sizes = _dispatcher_sizes(dispatchers)
        check_count("dead_letters_kept", dead_letters_kept, owner="ActorSystem")
        check_seconds(
            "slow_callback_duration", slow_callback_duration, positive=False, optional=True, owner="ActorSystem"
        )
        if clock is not None:
            check_interface(
                "clock", clock, ("now",), "a Clock (MonotonicClock(), ManualClock()) or None", owner="ActorSystem"
            )
        self.name = name if name is not None else f"system-{next(_system_ids)}"
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.throughput = throughput
        self.dead_letters = DeadLetters(keep=dead_letters_kept)
        # Audit events of the runtime and the services; silent until enable_audit_log attaches a sink.
        self.audit = AuditChannel()
        self.scheduler = Scheduler(self.clock, name=self.name)
        # Guards the tree (every cell's parent/children), the name registry and
        # cell termination. Held only for a few dict operations at a time.
        self.tree_lock = threading.RLock()
        # Invariant: holds exactly the named cells that have not terminated.
        self.registry: dict[str, Cell] = {}
        self._state = _RUNNING
        self._state_lock = threading.Lock()
        self._shut_down = threading.Event()
        # The live thread-mode executors. Touched only by single C calls
        # (add, discard, `in`, list()), each atomic under the GIL, so without
        # the tree lock: 10,000 actor threads exiting at once convoyed on it.
        self._actor_threads: set[ThreadExecutor] = set()
        # Wakes the idle thread-mode actors a burst of stops is sent to a few at a time.
        self._stop_pacer = StopPacer()
        # Invariant: the groups never change after construction; "default" is one.
        self._pools = {group: DispatcherPool(self.name, size, group=group) for group, size in sizes.items()}
        self._pool = self._pools[DEFAULT_DISPATCHER]
        self._asyncio = AsyncioExecutor(
            self.name, loop=loop, clock=self.clock, slow_callback_duration=slow_callback_duration, fallback=self._pool
        )
        # Blocking asks of idle actors on this executor run on the asking thread.
        self.inline_executor: object = self._pool
        # The metrics service's probe (`actors._core.observe.Probe`); None: off,
        # and a turn pays one check of it.
        self.observer: Probe | None = None
        # The tracing service's tracer (`actors._core.tracing.Tracer`), set with
        # `actors._core.observe.set_tracer`; None: off.
        self.tracer: Tracer | None = None
        _at_first_system()
        self._pool.start()
        self.scheduler.start()
        self._held_watch: HeldDispatcherWatch | None = None
        if slow_callback_duration is not None:
            self._held_watch = HeldDispatcherWatch(
                self.name, self._pool, slow_callback_duration, self.clock.now, self.scheduler
            )
        self._guardian = self._new_cell(_Guardian, "pooled", None, None, _FIFO)
        self._guardian.instantiate((root_policy,), {}, False)  # not in pykka's registry
        self._guardian.launch()
        _live_systems.add(self)

    def __repr__(self) -> str:
        return f"<ActorSystem {self.name!r} {self._state}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.ashutdown()

    # -- spawning ----------------------------------------------------------------

    def spawn(
        self,
        actor_class: type[pykka.Actor],
        *args: Any,
        name: str | None = None,
        mode: str | None = None,
        mailbox: MailboxSpec | None = None,
        # The member, not its str: `_spawn` then skips validating it (an enum
        # call, ~0.4 µs of a ~10 µs spawn).
        restart: RestartType | str = RestartType.TEMPORARY,
        dispatcher: str | None = None,
        **kwargs: Any,
    ) -> ActorRef[Any]:
        """Start an actor and return its ref; `args` and `kwargs` go to its constructor.

        Args:
            actor_class: a `pykka.Actor` subclass: mode-neutral (`actors.Actor`),
                bound to a mode (`PooledActor`, `ThreadActor`, `AsyncioActor`)
                or a plain `pykka.ThreadingActor`.
            name: unique among the system's live actors; `lookup(name)` finds it.
            mode: ``"pooled"`` (default for mode-neutral classes), ``"thread"``,
                ``"asyncio"`` (default for mode-neutral classes with coroutine
                handlers), or any key of `actors.MODES`; a class bound to a
                mode runs in it.
            mailbox: a mailbox spec (default `FifoMailbox()`).
            restart: ``"temporary"`` (default: a failure stops it, as in pykka),
                ``"transient"`` or ``"permanent"``: the root supervisor restarts it
                by the system's `root_policy` (see `actors._core.supervision`).
            dispatcher: pooled actors only: the dispatcher group to run on, a
                key of the system's `dispatchers` (default: the class attribute
                ``dispatcher``, else ``"default"``).
            *args: positional arguments of the actor's constructor.
            **kwargs: keyword arguments of the actor's constructor.

        Raises:
            ActorNameTakenError: `name` is used by a live actor.
            DispatcherError: `dispatcher` names no group of this system, or
                was given for an actor that runs in thread or asyncio mode.
            EventLoopError: an asyncio actor, and the loop given to the system
                is closed or not running.
            ModeError: unknown mode, one the class is not bound to, or one
                without an event loop for a class with coroutine handlers.
            NotAnActorError: `actor_class` is not a pykka actor class.
            SystemShutdownError: the system is shutting down or shut down.
        """
        return self._spawn(
            actor_class, args, kwargs, name=name, mode=mode, mailbox=mailbox, restart=restart, dispatcher=dispatcher
        )

    def spawn_many(
        self,
        actor_class: type[pykka.Actor],
        count: int,
        *args: Any,
        mode: str | None = None,
        mailbox: MailboxSpec | None = None,
        restart: RestartType | str = RestartType.TEMPORARY,
        dispatcher: str | None = None,
        **kwargs: Any,
    ) -> list[ActorRef[Any]]:
        """Start `count` unnamed actors of one class, each built with `args` and `kwargs`; return their refs.

        The bulk path for many alike actors (a million agents in one
        process): the same actors, in the same order, as `count` calls of
        `spawn` would start, with the arguments checked once, and Python's
        cyclic garbage collector paused while they are built. What a bulk
        spawn allocates is all alive (each cell is reachable from its
        parent), so a collection in the middle of it frees nothing, yet each
        one walks every object the process holds: CPython 3.11 runs a full
        collection each time the long-lived objects grow by a quarter, and
        those walks were ~37% of the CPU of spawning a million actors one
        `spawn` at a time. The pause is for this call only: the collector is
        switched back on before it returns (also when it raises) unless it
        was off when it began, and a ``gc.collect()`` then gives the new
        objects their one walk into the oldest generation. Calls from many
        threads at once share one pause; garbage cycles made meanwhile on
        other threads wait for that collection. ``gc.callbacks`` see it.

        Any thread may call it, as `spawn`. The constructor arguments are the
        same objects for every actor (build per-actor state in ``__init__``).

        Raises:
            TypeError: `count` is not an int.
            ValueError: `count` is negative.
            Exception: what `spawn` raises; the actors started before the
                failing one keep running.
        """
        check_count("count", count, owner="ActorSystem.spawn_many")
        if not count:
            return []
        with _collector_paused():
            # The first spawn checks every argument (and raises as `spawn`
            # would); the others skip the checks and build as `_spawn` does.
            first = self._spawn(
                actor_class, args, kwargs, mode=mode, mailbox=mailbox, restart=restart, dispatcher=dispatcher
            )
            refs: list[ActorRef[Any]] = [first]
            concrete, mode = concrete_class(actor_class, mode)
            pool = None
            own_group = mode not in _NO_DISPATCHER and getattr(concrete, "dispatcher", None) is not None
            if dispatcher is not None or own_group:
                pool = self._group(concrete, mode, dispatcher)
            kept = None if restart is RestartType.TEMPORARY else restart_type(restart)
            if kept is RestartType.TEMPORARY:
                kept = None
            spec = None if kept is None else (args, kwargs)
            new_cell, home, box = self._new_cell, self._guardian, mailbox or _FIFO
            append, threads = refs.append, self._actor_threads
            for _ in range(count - 1):
                if self._state != _RUNNING:
                    msg = f"cannot spawn {concrete.__qualname__!r}: system {self.name!r} is {self._state}"
                    raise SystemShutdownError(msg)
                cell = new_cell(concrete, mode, None, home, box, kept, spec, pool=pool)
                cell.instantiate(args, kwargs, False)
                executor = cell.executor
                if isinstance(executor, ThreadExecutor):
                    threads.add(executor)  # as in `_spawn`
                    executor.start()
                cell.launch()
                append(cell.ref)
        return refs

    def _spawn(
        self,
        actor_class: type[pykka.Actor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        name: str | None = None,
        mode: str | None = None,
        mailbox: MailboxSpec | None = None,
        parent: Cell | None = None,
        pykka_registry: bool = False,
        restart: RestartType | str = RestartType.TEMPORARY,
        dispatcher: str | None = None,
    ) -> ActorRef[Any]:
        if self._state != _RUNNING:
            what = getattr(actor_class, "__qualname__", actor_class)
            msg = f"cannot spawn {what!r}: system {self.name!r} is {self._state}"
            raise SystemShutdownError(msg)
        concrete, mode = concrete_class(actor_class, mode)
        if name is not None and (not isinstance(name, str) or not name):
            msg = f"an actor name must be a non-empty str, got {name!r}"
            raise TypeError(msg)
        if mailbox is not None and not callable(getattr(mailbox, "create", None)):
            msg = (
                "mailbox must be a mailbox spec such as FifoMailbox(), PriorityMailbox() "
                f"or BoundedMailbox(n), got {mailbox!r}"
            )
            raise TypeError(msg)
        if restart is not RestartType.TEMPORARY:
            restart = restart_type(restart)
        pool = None
        if dispatcher is not None or (mode not in _NO_DISPATCHER and getattr(concrete, "dispatcher", None) is not None):
            pool = self._group(concrete, mode, dispatcher)
        home = self._guardian if parent is None else parent
        if restart is RestartType.TEMPORARY:
            cell = self._new_cell(concrete, mode, name, home, mailbox or _FIFO, pool=pool)
        else:  # a restart builds the instance again from the same arguments
            cell = self._new_cell(concrete, mode, name, home, mailbox or _FIFO, restart, (args, kwargs), pool=pool)
        # `cell.sched` is held: nothing can run the cell until it is launched below.
        cell.instantiate(args, kwargs, pykka_registry)
        executor = cell.executor
        if isinstance(executor, ThreadExecutor):
            self._actor_threads.add(executor)  # one C call under the GIL: atomic, no lock (see __init__)
            executor.start()
        cell.launch()
        return cell.ref

    def _new_cell(  # noqa: PLR0917 - positional on the spawn path (see below)
        self,
        concrete: type[pykka.Actor],
        mode: str,
        name: str | None,
        parent: Cell | None,
        mailbox: MailboxSpec,
        restart: RestartType | None = None,
        spec: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
        *,
        pool: DispatcherPool | None = None,
    ) -> Cell:
        loop: asyncio.AbstractEventLoop | None = None
        reentrant = False
        executor: Executor
        if mode == "thread":
            executor = ThreadExecutor(
                f"{name or concrete.__name__}",
                daemon=bool(getattr(concrete, "use_daemon_thread", False)),
                on_exit=self._actor_thread_exited,
                pacer=self._stop_pacer,
            )
            throughput = sys.maxsize
        elif mode == "asyncio":
            executor = self._asyncio
            loop = self._asyncio.ensure_running()
            reentrant = bool(getattr(concrete, "reentrant", False))
            throughput = self.throughput
        else:
            executor = self._pool if pool is None else pool
            throughput = self.throughput
        # Positional arguments: a keyword argument costs a spawn ~10 ns, and
        # these are 13 (measured: one-phase building with keywords made
        # pinned pooled spawns ~4% slower).
        cell = Cell(
            self,
            concrete,
            executor,
            name,
            parent,
            # the URN: drawn and formatted when first read (`Cell.urn`); eager
            # `uuid.uuid4().urn` measured 2.9 µs a spawn, `os.urandom(16)` 0.4 µs
            None,
            throughput,
            # An actor class may give its address a behaviour of its own (a
            # router's ref routes on the sender's thread).
            getattr(concrete, "_troupe_ref_class", ActorRef),
            mailbox,
            loop,
            reentrant,
            restart,
            spec,
        )
        with self.tree_lock:
            if name is not None:
                if name in self.registry:
                    msg = (
                        f"an actor named {name!r} is already running in system {self.name!r} "
                        f"({self.registry[name].ref}); choose another name or stop that actor first"
                    )
                    raise ActorNameTakenError(msg)
                self.registry[name] = cell
            if parent is not None:
                # Adopt first, then check: a stopping parent reads its
                # children without this lock when it never had one
                # (`StopChildren.next_child`), and this order is what makes
                # that read safe.
                parent.adopt(cell)
                if parent.is_stopping():
                    parent.disown(cell)
                    if name is not None:
                        del self.registry[name]
                    msg = f"cannot spawn a child of {parent.ref}: it is stopping"
                    raise SystemShutdownError(msg)
        return cell

    def _group(self, concrete: type[pykka.Actor], mode: str, dispatcher: str | None) -> DispatcherPool:
        """Return the dispatcher pool an actor spawned with `dispatcher` runs on, started."""
        given = dispatcher is not None
        if dispatcher is None:
            dispatcher = getattr(concrete, "dispatcher", None)
        where = "dispatcher=" if given else f"{concrete.__qualname__}.dispatcher"
        if not isinstance(dispatcher, str):
            msg = f"{where} must be the name of a dispatcher group (a str) or None, got {dispatcher!r}"
            raise TypeError(msg)
        if mode in _NO_DISPATCHER:
            msg = (
                f"{where} {dispatcher!r} cannot apply to {concrete.__qualname__}: it runs in mode {mode!r}, "
                "which has no dispatcher (a thread of its own, or the event loop); "
                "drop dispatcher= or spawn it with mode='pooled'"
            )
            raise DispatcherError(msg)
        pool = self._pools.get(dispatcher)
        if pool is None:
            msg = (
                f"{where} {dispatcher!r} is not a dispatcher group of system {self.name!r} "
                f"(it has {sorted(self._pools)}); declare it: ActorSystem(dispatchers={{'default': ..., "
                f"{dispatcher!r}: size}})"
            )
            raise DispatcherError(msg)
        pool.ensure_started()
        return pool

    @property
    def dispatchers(self) -> dict[str, int]:
        """The dispatcher groups: name -> number of threads."""
        return {group: pool.size for group, pool in self._pools.items()}

    def _actor_thread_exited(self, executor: ThreadExecutor) -> None:
        self._actor_threads.discard(executor)

    # -- time ----------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], object]) -> Callable[[], None]:
        """Call `callback` once, `delay` seconds from now on the system's clock; return a function that cancels it.

        For code outside an actor (an actor has ``self.timers``): deadlines of
        futures, backup requests. Thread contract: any thread may call it;
        `callback` runs on the system's timer thread (with a `ManualClock`, on
        the thread calling ``advance()``, before it returns), one callback at a
        time in deadline order, so it must be quick and never block: tell an
        actor or settle a future. An exception it raises is logged and the
        timer goes on. Calling the returned function before the callback runs
        makes sure it never runs; after, or twice, it does nothing. Nothing
        fires once the system has shut down.

        Raises:
            TypeError: `callback` is not callable, or `delay` is not a number.
            ValueError: `delay` is negative or NaN.
        """
        if not callable(callback):
            msg = f"ActorSystem.call_later: callback must be callable, got {callback!r}"
            raise TypeError(msg)
        scheduler = self.scheduler
        handle = scheduler.call_later(delay, callback)  # type: ignore[arg-type]  # its result is ignored

        def cancel() -> None:
            scheduler.cancel(handle)

        return cancel

    # -- looking up ----------------------------------------------------------------

    def lookup(self, name: str) -> ActorRef[Any] | None:
        """Return the ref of the live actor named `name`, or None (O(1))."""
        cell = self.registry.get(name)
        return None if cell is None else cell.ref

    def children(self) -> list[ActorRef[Any]]:
        """Return the refs of the live top-level actors, oldest first."""
        return [cell.ref for cell in self._guardian.children_snapshot()]

    def metrics(self) -> Any:
        """Return an immutable snapshot of the system's metrics (`actors.observability.MetricsSnapshot`).

        Metrics are off by default; ``actors.observability.enable_metrics(system)``
        turns them on. Any thread.

        Raises:
            MetricsOffError: they are off.
        """
        observer = self.observer
        if observer is None:
            msg = (
                f"metrics are off in system {self.name!r}; "
                "turn them on first with actors.observability.enable_metrics(system)"
            )
            raise MetricsOffError(msg)
        return observer.snapshot()

    @property
    def is_running(self) -> bool:
        """Whether the system accepts new actors (it has not begun shutting down)."""
        return self._state == _RUNNING

    # -- shutting down -------------------------------------------------------------

    def shutdown(self, *, timeout: float | None = None) -> None:
        """Stop every actor, then join every thread the system started. Idempotent.

        Children stop before parents and siblings in reverse start order; mail
        still queued goes to dead letters.

        Args:
            timeout: seconds to wait for the actors to stop (default: no limit).

        Raises:
            SystemShutdownError: called from inside an actor's handler: on one
                of this system's own threads, in a handler run inline for a
                blocking ask (any system's), or on the thread running its given
                loop (it would wait for itself; from a coroutine, await
                `ashutdown`). Refused at once, in every mode; or actors were
                still running after `timeout` seconds (call `shutdown` again
                to keep waiting).
        """
        # Refused, not deferred: a shutdown waits for every actor to stop, and
        # the actor whose handler is calling it cannot stop until it returns.
        # An inline turn (a pooled ask without timeout runs its handler on the
        # asking thread) holds its actor the same way, whichever system it is
        # of, so any shutdown from inside one is refused.
        if inline_depth() > 0:
            msg = (
                f"shutdown() of system {self.name!r} was called from inside an actor's handler, run inline on "
                f"{threading.current_thread().name} for a blocking ask; it would wait for that actor, which "
                "cannot stop until the handler returns: call shutdown() from outside the system, or stop "
                "the actor instead"
            )
            raise SystemShutdownError(msg)
        executor = current_executor()
        if executor is self._asyncio or executor in self._pools.values() or executor in self._actor_threads:
            msg = (
                f"shutdown() of system {self.name!r} was called from one of its own threads "
                f"({threading.current_thread().name}); call it from outside the system, "
                "or stop the actor instead"
            )
            raise SystemShutdownError(msg)
        if self._asyncio.on_loop_thread():
            msg = (
                f"shutdown() of system {self.name!r} was called on the thread running the event loop its "
                "asyncio actors run on, which it would block while waiting for them; "
                "from a coroutine use `await system.ashutdown()` (or `async with ActorSystem(...)`)"
            )
            raise SystemShutdownError(msg)
        if not self._begin_shutdown():
            return
        guardian_done = threading.Event()
        self._guardian.on_terminated(lambda _cell: guardian_done.set())
        if not guardian_done.wait(timeout):
            raise self._still_running(timeout)
        self._finish_shutdown()

    async def ashutdown(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - as `shutdown(timeout=)`
        """Shut down from a coroutine (as `shutdown`), waiting without blocking its loop. Idempotent.

        It may run on any loop, the system's given loop included, but not in
        a handler of one of this system's own actors.

        Raises:
            SystemShutdownError: awaited by one of this system's actors, or
                actors were still running after `timeout` seconds.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if current_executor() is self._asyncio or any(cell.runs_handler(task) for cell in self._live_cells()):
            msg = (
                f"ashutdown() of system {self.name!r} was awaited by one of its own actors, which it would "
                "stop and wait for; call it from outside the system, or stop the actor instead"
            )
            raise SystemShutdownError(msg)
        if not self._begin_shutdown():
            return
        guardian_done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not guardian_done.done():
                guardian_done.set_result(None)

        def terminated(_cell: Cell) -> None:
            loop.call_soon_threadsafe(settle)

        self._guardian.on_terminated(terminated)
        try:
            await asyncio.wait_for(asyncio.shield(guardian_done), timeout)
        except TimeoutError:
            raise self._still_running(timeout) from None
        self._finish_shutdown()

    def _begin_shutdown(self) -> bool:
        """Move to stopping and stop the guardian; return False if already shut down."""
        with self._state_lock:
            if self._state == _SHUT_DOWN:
                return False
            self._state = _STOPPING
        if not self._guardian.is_terminated():
            self._guardian.post_system(STOP)
        return True

    def _still_running(self, timeout: float | None) -> SystemShutdownError:
        alive = [str(cell.ref) for cell in self._live_cells()[:10]]
        msg = (
            f"system {self.name!r} did not stop within {timeout} seconds; still running: {alive}. "
            "A handler is probably blocked; call shutdown() again to keep waiting"
        )
        return SystemShutdownError(msg)

    def _finish_shutdown(self) -> None:
        # Every actor has terminated: join every thread (each is finishing).
        for pool in self._pools.values():
            pool.shutdown()
        self._asyncio.shutdown()
        self.scheduler.shutdown()
        threads = list(self._actor_threads)
        for actor_thread in threads:
            actor_thread.join()
        self.audit.close()  # an audit log still enabled writes what is queued and joins its writer
        if self.tracer is not None:  # a tracer still set is removed and closed (it may own a thread)
            set_tracer(self, None)
        with self._state_lock:
            self._state = _SHUT_DOWN
        self._shut_down.set()
        _live_systems.discard(self)

    def _live_cells(self) -> list[Cell]:
        found: list[Cell] = []
        with self.tree_lock:
            stack = [self._guardian]
            while stack:
                cell = stack.pop()
                found.append(cell)
                stack.extend(cell.children_snapshot())
        return found

    def _stop_all_actors(self) -> None:
        """Ask every top-level actor to stop now, without waiting (pykka's BaseException rule)."""
        for cell in reversed(self._guardian.children_snapshot()):
            cell.post_system(STOP)


_collector_lock = threading.Lock()
# Guarded by `_collector_lock`: the `spawn_many` calls under way, and whether
# the first of them found the collector on (the last one out switches it back).
_collector_pauses = 0
_collector_was_on = False


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; the last block out restores it and collects once."""
    global _collector_pauses, _collector_was_on  # noqa: PLW0603 - one pause per process, under the lock
    with _collector_lock:
        if not _collector_pauses:
            _collector_was_on = gc.isenabled()
            gc.disable()
        _collector_pauses += 1
    try:
        yield
    finally:
        with _collector_lock:
            _collector_pauses -= 1
            resume = not _collector_pauses and _collector_was_on
            if resume:
                gc.enable()
        if resume:
            gc.collect()


def _dispatcher_sizes(dispatchers: object) -> dict[str, int]:
    """Return the dispatcher groups `ActorSystem(dispatchers=...)` asks for: name -> size."""
    if dispatchers is None:
        return {DEFAULT_DISPATCHER: _cpu_count()}
    if isinstance(dispatchers, Mapping):
        sizes: dict[str, int] = {}
        for group, size in dispatchers.items():
            if not isinstance(group, str) or not group:
                msg = f"ActorSystem: a dispatcher group name must be a non-empty str, got {group!r} in {dispatchers!r}"
                raise TypeError(msg)
            sizes[group] = check_count(f"dispatchers[{group!r}]", size, minimum=1, owner="ActorSystem")  # type: ignore[assignment]
        sizes.setdefault(DEFAULT_DISPATCHER, _cpu_count())
        return sizes
    if isinstance(dispatchers, bool) or not isinstance(dispatchers, int):
        msg = (
            "ActorSystem: dispatchers must be an int >= 1 (threads of the default group), a mapping of "
            f"group name to size such as {{'default': 2, 'blocking': 32}}, or None; got {dispatchers!r}"
        )
        raise TypeError(msg)
    check_count("dispatchers", dispatchers, minimum=1, owner="ActorSystem")
    return {DEFAULT_DISPATCHER: dispatchers}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_default: ActorSystem | None = None
_default_lock = threading.Lock()


def default_system() -> ActorSystem:
    """Return the process-wide system behind `Actor.start()`, creating it on first use.

    It is shut down when the interpreter exits.
    """
    global _default  # noqa: PLW0603
    with _default_lock:
        if _default is None or not _default.is_running:
            _default = ActorSystem("default")
        return _default


_first_system_lock = threading.Lock()
_first_system_done = False


def _at_first_system() -> None:
    """Set up, once per process, what any system needs; importing the package sets up nothing.

    Routes pykka's log records into loguru (one handler on pykka's logger, not
    one per system) and registers the exit hook that shuts down the systems
    still running when the interpreter exits. Every new system calls it.
    """
    global _first_system_done  # noqa: PLW0603 - once per process, under the lock
    with _first_system_lock:
        if _first_system_done:
            return
        logbridge.install()
        atexit.register(_shutdown_live_systems)
        _first_system_done = True


def _shutdown_live_systems() -> None:
    for system in list(_live_systems):
        try:
            system.shutdown(timeout=10)
        except Exception:  # noqa: BLE001 - interpreter exit: log and go on
            logger.opt(exception=True).error("Shutting down {} at exit failed", system)
