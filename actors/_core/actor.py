"""Actor base classes: the mode-neutral `Actor` and one base per execution mode.

Write agents against `Actor`; choose where they run when you spawn them::

    system.spawn(Agent)                  # pooled: shares the dispatcher threads
    system.spawn(Agent, mode="thread")   # its own OS thread, for blocking work
    system.spawn(Agent, mode="asyncio")  # the system's event loop; handlers may be async

A class derived from a mode's base (`PooledActor`, `ThreadActor`,
`AsyncioActor`) or from pykka's `ThreadingActor` always runs in that mode. A
mode-neutral class with coroutine handlers (``async def on_receive`` or any
``async def`` method a proxy may call, ``on_start``, ``on_stop``) runs as
``"asyncio"`` by default, and cannot run in a mode without an event loop. For a
mode-neutral class the system builds (once per class and mode) a subclass
``(YourClass, ModeBase)`` with the same name, so ``isinstance(actor, YourClass)``
holds and your methods come first in the MRO.

Every mode is a `pykka.Actor`: `on_start`, `on_receive`, `on_stop`,
`on_failure`, proxies and futures behave as pykka documents them for
`ThreadingActor`. Which thread runs the hooks:

- thread mode: the actor's own thread (``__init__`` runs on the spawner's);
- pooled mode: one of the system's dispatcher threads, never two at once for
  the same actor; consecutive messages may run on different threads;
- asyncio mode: the system's event loop thread (``troupe-<system>-asyncio``,
  or the thread running the loop given to the system); see `AsyncioActor`.
"""

from __future__ import annotations

import inspect
import threading
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Self

import pykka

from actors._core.batching import NO_MESSAGES, QueuedMessage, TakenMessages, take_tells
from actors._core.cell import constructing_cell, record_constructing
from actors._core.future import Future
from actors._core.messages import SelfStop
from actors._core.ref import ActorRef, StoppedFlag
from actors.errors import ModeError, NotAnActorError, SpawnContextError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from actors._core.cell import Cell
    from actors._core.mailbox import MailboxSpec
    from actors._core.supervision import RestartType, SupervisionPolicy
    from actors._core.system import ActorSystem
    from actors._core.timers import Timers

__all__ = ["MODES", "Actor", "AsyncioActor", "PooledActor", "ThreadActor", "concrete_class", "mode_of"]


class Actor(pykka.Actor):
    """The mode-neutral troupe actor. Subclass it; spawn it with `ActorSystem.spawn`.

    Adds to pykka's `Actor`: `actor_system`, `actor_name`, `timers`, `spawn`
    (children that stop before their parent and are supervised by it),
    `watch`/`unwatch` (death watch), the restart hooks `pre_restart` and
    `post_restart` (see `actors._core.supervision`), and `take_queued`
    (batching: handle a run of queued messages in one turn).
    """

    _troupe_mode: ClassVar[str | None] = None

    supervision_policy: SupervisionPolicy
    """How this actor supervises the children it spawns with a restart type
    other than ``temporary`` (class or instance attribute; default: one_for_one,
    at most 1 restart in 5 s, every exception restarts)."""

    reentrant: ClassVar[bool] = False
    """Asyncio mode only: handle the next message while a handler awaits (see `AsyncioActor`)."""

    dispatcher: ClassVar[str | None] = None
    """Pooled mode only: the dispatcher group to run on (a key of ``ActorSystem(dispatchers={...})``).

    None (the default): the ``"default"`` group; ``spawn(..., dispatcher=)``
    overrides it. A group of its own keeps an actor whose handler blocks
    (``time.sleep``, a blocking HTTP call) from holding the threads every other
    pooled actor runs on (Akka's dedicated dispatcher).
    """

    refusals: ClassVar[tuple[type[BaseException], ...]] = ()
    """Exceptions that refuse a request rather than reveal a bug (the shared-service rule).

    Raised by the handler of a tell (a coroutine handler's too), an exception
    of one of these types does not fail the actor: it is logged and recorded
    as a dead letter with reason ``REJECTED`` (the exception attached; a tell
    with a receipt gets it too) and the actor goes on with its next message.
    An ask gets the exception as always. Any other exception (and a
    `TroupeInternalError`, always) still fails the actor: a shared service
    fails only for its own bugs. Services use ``(TroupeError,)``: every error
    troupe raises on purpose is one.
    """

    _troupe_cell: Cell

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        """Bind the instance to the cell it is being spawned into.

        Call it from your ``__init__`` (``super().__init__()``) as with pykka.
        Instantiated directly (``MyActor(1, 2, foo="bar")``, outside
        `ActorSystem.spawn` and `start`), it is a raw instance, as in pykka: its
        methods may be called (a unit test of an actor's logic), ``str()``
        names its class and its ``actor_urn``, but it is not running: its ref
        is not alive, and what needs a system (a tell, ``timers``,
        ``spawn``...) raises `SpawnContextError` saying so.
        """
        cell = constructing_cell()
        if cell is None:
            self._troupe_cell = _Unstarted(type(self))  # type: ignore[assignment]
            return
        self._troupe_cell = cell
        record_constructing(self)

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> ActorRef[Self]:
        """Start the actor on the process-wide default system (pykka's `Actor.start`).

        All arguments go to the constructor. The actor is also registered in
        `pykka.ActorRegistry`, so ``ActorRegistry.stop_all()`` stops it.
        """
        from actors._core.system import default_system  # noqa: PLC0415 - system imports this module

        return default_system()._spawn(cls, args, kwargs, pykka_registry=True)  # noqa: SLF001

    # pykka's seams. The inbox and the loop belong to the cell, not the instance.
    @staticmethod
    def _create_actor_inbox() -> Any:
        msg = "troupe actors get their mailbox from the ActorSystem"
        raise NotImplementedError(msg)

    @staticmethod
    def _create_future() -> Future[Any]:
        return Future()

    def _start_actor_loop(self) -> None:
        msg = "troupe actors are started by the ActorSystem"
        raise NotImplementedError(msg)

    # pykka's instance attributes, read from the cell (they survive restarts).
    @property
    def actor_urn(self) -> str:  # type: ignore[override]
        """The actor's URN, unique across systems and processes."""
        return self._troupe_cell.urn

    @property
    def actor_inbox(self) -> Cell:  # type: ignore[override]
        """The actor's inbox (use `ActorRef.tell`/`ask` to put messages in it)."""
        return self._troupe_cell

    @property
    def actor_stopped(self) -> StoppedFlag:  # type: ignore[override]
        """A `threading.Event`-like flag, set once the actor stops."""
        return StoppedFlag(self._troupe_cell)

    @property
    def _actor_ref(self) -> ActorRef[Any]:  # type: ignore[override]
        return self._troupe_cell.ref

    @property
    def actor_name(self) -> str | None:
        """The name this actor was spawned with, or None."""
        return self._troupe_cell.name

    @property
    def actor_system(self) -> ActorSystem:
        """The `ActorSystem` this actor lives in."""
        return self._troupe_cell.system

    @property
    def timers(self) -> Timers:
        """This actor's keyed timers (see `actors._core.timers.Timers`)."""
        return self._troupe_cell.timers

    def spawn(
        self,
        actor_class: type[pykka.Actor],
        *args: Any,
        name: str | None = None,
        mode: str | None = None,
        mailbox: MailboxSpec | None = None,
        restart: RestartType | str = "temporary",
        dispatcher: str | None = None,
        **kwargs: Any,
    ) -> ActorRef[Any]:
        """Spawn a child: it stops before this actor stops (see `ActorSystem.spawn`).

        With a `restart` type other than ``"temporary"`` (the default) this
        actor supervises it by its `supervision_policy`.
        """
        cell = self._troupe_cell
        return cell.system._spawn(  # noqa: SLF001
            actor_class,
            args,
            kwargs,
            name=name,
            mode=mode,
            mailbox=mailbox,
            parent=cell,
            restart=restart,
            dispatcher=dispatcher,
        )

    def watch(self, ref: pykka.ActorRef[Any]) -> None:
        """Receive `Terminated(ref, reason)` in ``on_receive`` once `ref`'s actor is gone for good.

        Restarts are not terminations. Watching an actor that has already
        terminated delivers `Terminated` at once; watching twice delivers it once.
        Call it from the actor's own handlers.
        """
        self._troupe_cell.watch(_cell_of(ref, "watch"))

    def unwatch(self, ref: pykka.ActorRef[Any]) -> None:
        """Stop watching `ref`; no `Terminated` for it is delivered after this returns."""
        self._troupe_cell.unwatch(_cell_of(ref, "unwatch"))

    def take_queued(self, predicate: Callable[[QueuedMessage], bool], *, limit: int) -> TakenMessages:
        """Take the messages queued right behind the current one while `predicate(queued)` holds.

        Iterating the result takes them one at a time, in mailbox order, up
        to `limit` (none if the mailbox is empty when this is called),
        stopping at the first message `predicate` refuses (or a message the
        runtime handles itself, or a waiting system message). Each is a
        `QueuedMessage`: the message, and the reply future the predicate may
        look at and the handler must now settle for an ask
        (``queued.reply(value)`` / ``queued.fail(exc)``).
        Use it as a context manager so that an exception leaving the block
        fails every taken ask not yet answered::

            with self.take_queued(lambda queued: isinstance(queued.message, Write), limit=100) as taken:
                writes = [queued for queued in taken]
                ...

        Works on every mailbox kind and in every mode; on a bounded mailbox
        each message taken frees its slot at once (a blocked sender wakes).
        See `actors._core.batching` for the full semantics.

        Thread contract: call it, and iterate what it returns, only from this
        actor's own handlers during a turn (on the loop's thread for an
        asyncio actor), never from another thread or after the turn.

        Raises:
            ValueError: `limit` is negative.
        """
        cell = self._troupe_cell
        if not len(cell.queue) and limit >= 0:
            # Nothing queued now: what arrives later is for the next turns. A
            # store write pays for this call once per commit.
            return NO_MESSAGES
        return TakenMessages(cell, predicate, limit)

    def take_queued_tells(self, cls: type, *, limit: int) -> Iterator[Any]:
        """Take the plain tells of exactly class `cls` queued right behind the current message.

        Iterating the result takes them one at a time, in mailbox order, up
        to `limit`, stopping at the first message that is not a plain tell
        of class `cls` (an ask, a tell with a receipt, a traced message, a
        subclass: each gets its own turn) or when a system message is
        waiting. It yields the messages themselves: a tell has no reply to
        settle, so a handler that batches notifications (one costly thing
        for a run of them) pays no `QueuedMessage` nor predicate call each,
        as `take_queued` does. Stop iterating and the rest stay queued.
        Works on every mailbox kind and in every mode; see
        `actors._core.batching` for the semantics it shares with `take_queued`.

        Thread contract: as `take_queued`: only from this actor's own
        handlers, during a turn.

        Raises:
            ValueError: `limit` is negative.
            TypeError: `cls` is a message class the runtime handles itself.
        """
        return take_tells(self._troupe_cell, cls, limit)

    def pre_restart(self, exc: BaseException | None) -> Any:
        """Hook: this instance is being replaced by a fresh one after `exc` (None: a normal exit).

        Runs in the actor's own turn after its timers are cancelled, and
        after ``on_stop`` if this instance did not fail (a sibling restarted
        with it); its children are stopped right after. Default: nothing.
        Returns None, or in asyncio mode a coroutine, which is awaited before
        the restart goes on (hence ``Any``, as `post_restart`).
        """

    def post_restart(self, exc: BaseException | None) -> Any:  # noqa: ARG002 - the hook's signature
        """Hook: this fresh instance replaces one that ended with `exc`. Default: ``on_start()``.

        Runs in the actor's own turn, before any queued message reaches the
        new instance. An exception here counts as a failure. What it returns
        is ``on_start``'s result: in asyncio mode a coroutine, which is awaited
        (a coroutine ``pre_restart``/``post_restart`` is awaited too).
        """
        return self.on_start()

    def __str__(self) -> str:
        return str(self._troupe_cell.ref)

    def stop(self) -> None:
        """Stop the actor after the messages already queued (pykka's `Actor.stop`).

        This is the actor ending itself: a ``permanent`` child is restarted
        (Erlang's rule for a normal exit); ``ref.stop()`` from outside never is.
        """
        self._troupe_cell.ref.tell(SelfStop())


class _Unstarted:
    """What a raw instance (instantiated directly, never spawned) has in place of a cell.

    It names the instance (class, uuid4 URN) and is not alive; anything else
    a running actor's cell provides raises `SpawnContextError`.
    """

    __slots__ = ("actor_class", "ref", "urn")

    name = None
    alive = False
    actor = None

    def __init__(self, actor_class: type[Actor]) -> None:
        self.actor_class = actor_class
        self.urn = uuid.uuid4().urn
        self.ref = ActorRef(self)  # type: ignore[arg-type,var-annotated]

    def stopped_event(self) -> threading.Event:
        stopped = threading.Event()
        stopped.set()
        return stopped

    def __getattr__(self, name: str) -> NoReturn:
        cls = self.actor_class.__name__
        msg = (
            f"{cls} ({self.urn}) is a raw instance, not a running actor (it was instantiated directly, so it "
            f"has no {name}); spawn it with system.spawn({cls}, ...) or {cls}.start(...) to run it"
        )
        raise SpawnContextError(msg)


def _cell_of(ref: Any, what: str) -> Cell:
    cell = getattr(ref, "_cell", None)
    if cell is None:
        msg = f"{what}() needs an ActorRef of a troupe actor, got {ref!r}"
        raise TypeError(msg)
    return cell  # type: ignore[no-any-return]


class PooledActor(Actor):
    """Base of actors that share the system's dispatcher threads (mode ``"pooled"``)."""

    _troupe_mode = "pooled"


class ThreadActor(Actor, pykka.ThreadingActor):
    """Base of actors with an OS thread each (mode ``"thread"``), like pykka's `ThreadingActor`.

    `use_daemon_thread` is honoured as in pykka.
    """

    _troupe_mode = "thread"


class AsyncioActor(Actor):
    """Base of actors run on the system's event loop (mode ``"asyncio"``); handlers may be coroutines.

    ``on_receive``, proxied methods, ``on_start``, ``on_stop``, ``pre_restart``
    and ``post_restart`` may each be a plain function or an ``async def``;
    ``on_failure`` must be plain (it runs as the actor fails). Every hook runs on the loop's thread: the
    system's own (``troupe-<system>-asyncio``), or the thread running the loop
    given as ``ActorSystem(loop=...)``; ``__init__`` runs on the spawner's.

    Ordering, by default: while a handler awaits, its actor handles no other
    message; messages are handled one at a time, in order, as in every mode,
    while the other actors on the loop keep running. With ``reentrant = True``
    on the class, the next message is taken as soon as a handler awaits:
    handlers still *start* in mailbox order and never run in parallel (one
    loop thread), but they interleave at their ``await`` points, so replies
    may come back out of order and state read before an ``await`` may have
    changed after it. ``on_start`` and ``on_stop`` are always awaited before
    anything else happens.

    Stopping: `ActorRef.stop` keeps pykka's order (the handler in flight
    finishes first); stops that preempt the mailbox (a parent stopping, the
    system shutting down, a failure) cancel the handler in flight, and its
    asker gets `pykka.ActorDeadError`. An exception in a coroutine handler
    follows the same path as in the other modes (the asker, or
    ``on_failure``, then stopping or its supervisor's directive); a restart
    cancels the handlers in flight like a stop, then awaits the old
    instance's teardown hooks and the new one's start hooks. Inside
    handlers, await other actors
    (``await ref.ask(msg, block=False)``, ``await proxy.method()``): a blocking
    ask of an actor on the same loop raises `EventLoopError`.
    """

    _troupe_mode = "asyncio"


MODES: dict[str, type[Actor]] = {
    "asyncio": AsyncioActor,
    "pooled": PooledActor,
    "thread": ThreadActor,
}
"""Execution mode name -> the base class of actors that run in it."""


def mode_of(actor_class: type) -> str | None:
    """Return the mode `actor_class` is bound to, or None if it is mode-neutral.

    Raises:
        NotAnActorError: it is not a `pykka.Actor` subclass.
        ModeError: it is a pykka actor of a kind troupe cannot run.
    """
    if not (isinstance(actor_class, type) and issubclass(actor_class, pykka.Actor)):
        msg = (
            f"spawn() needs a pykka Actor subclass (e.g. derived from actors.Actor), got {actor_class!r}; "
            "pass the class itself, not an instance or a function"
        )
        raise NotAnActorError(msg)
    if issubclass(actor_class, Actor):
        return actor_class._troupe_mode  # noqa: SLF001
    if issubclass(actor_class, pykka.ThreadingActor):
        return "thread"
    msg = f"{actor_class.__qualname__} is a pykka actor of an unsupported kind; derive it from actors.Actor"
    raise ModeError(msg)


def concrete_class(actor_class: type[pykka.Actor], mode: str | None) -> tuple[type[Actor], str]:
    """Return the class to instantiate for `actor_class` in `mode`, and the mode.

    Raises:
        ModeError: unknown mode, or a class bound to another mode.
    """
    # Cached on the class itself (keyed by the mode asked for, None included),
    # so the derived class lives exactly as long as the class.
    resolved = getattr(actor_class, "__dict__", {}).get("_troupe_resolved")
    if resolved is not None and mode in resolved:
        return resolved[mode]  # type: ignore[no-any-return]
    result = _resolve(actor_class, mode, resolved or {})
    if resolved is None:
        resolved = {}
        type.__setattr__(actor_class, "_troupe_resolved", resolved)
    resolved[mode] = resolved[result[1]] = result
    return result


def _resolve(
    actor_class: type[pykka.Actor], mode: str | None, resolved: dict[str | None, tuple[type[Actor], str]]
) -> tuple[type[Actor], str]:
    own = mode_of(actor_class)
    coroutines = _coroutine_functions(actor_class)
    if mode is None:
        mode = own or ("asyncio" if coroutines else "pooled")
    elif mode not in MODES:
        msg = f"unknown execution mode {mode!r}; choose one of {sorted(MODES)}"
        raise ModeError(msg)
    if mode in resolved:  # asked for by another name (None -> "pooled") before
        return resolved[mode]
    if own is not None and own != mode:
        msg = (
            f"{actor_class.__qualname__} is bound to mode {own!r} and cannot run as {mode!r}; "
            f"derive it from actors.Actor to choose the mode at spawn time"
        )
        raise ModeError(msg)
    if "on_failure" in coroutines:
        msg = (
            f"{actor_class.__qualname__}.on_failure is a coroutine function; it must be a plain function "
            "(it runs as the actor fails, in every mode)"
        )
        raise ModeError(msg)
    if mode != "asyncio":
        if coroutines:
            msg = (
                f"{actor_class.__qualname__} has coroutine handlers ({', '.join(coroutines)}) and cannot run as "
                f"{mode!r}: that mode has no event loop to await them; spawn it with mode='asyncio'"
            )
            raise ModeError(msg)
        if getattr(actor_class, "reentrant", False):
            msg = (
                f"{actor_class.__qualname__} sets reentrant = True, which only applies to mode 'asyncio' "
                f"(handlers that await); it cannot run as {mode!r}"
            )
            raise ModeError(msg)
    base = MODES[mode]
    if issubclass(actor_class, base):
        return actor_class, mode
    derived = type(
        actor_class.__name__,
        (actor_class, base),
        {"__module__": actor_class.__module__, "__qualname__": actor_class.__qualname__},
    )
    return derived, mode


def _coroutine_functions(actor_class: type) -> list[str]:
    """Return the names of the hooks and public methods of `actor_class` that are coroutine functions."""
    names = []
    for name in dir(actor_class):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(actor_class, name, None)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if inspect.iscoroutinefunction(attr):
            names.append(name)
    return names
