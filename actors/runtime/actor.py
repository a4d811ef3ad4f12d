"""Actor base classes: the mode-neutral `Actor` and one base per execution mode.

Write agents against `Actor`; choose where they run when you spawn them::

    system.spawn(Agent)                  # pooled: shares the dispatcher threads
    system.spawn(Agent, mode="thread")   # its own OS thread, for blocking work

A class derived from a mode's base (`PooledActor`, `ThreadActor`) or from
pykka's `ThreadingActor` always runs in that mode. For a mode-neutral class
the system builds (once per class and mode) a subclass ``(YourClass, ModeBase)``
with the same name, so ``isinstance(actor, YourClass)`` holds and your methods
come first in the MRO.

Every mode is a `pykka.Actor`: `on_start`, `on_receive`, `on_stop`,
`on_failure`, proxies and futures behave as pykka documents them for
`ThreadingActor`. Which thread runs the hooks:

- thread mode: the actor's own thread (``__init__`` runs on the spawner's);
- pooled mode: one of the system's dispatcher threads, never two at once for
  the same actor; consecutive messages may run on different threads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, ClassVar, Self

import pykka

from actors.runtime.errors import ModeError, NotAnActorError, SpawnContextError
from actors.runtime.future import Future
from actors.runtime.ref import StoppedFlag

if TYPE_CHECKING:
    from actors.runtime.cell import Cell
    from actors.runtime.mailbox import MailboxSpec
    from actors.runtime.ref import ActorRef
    from actors.runtime.system import ActorSystem
    from actors.runtime.timers import Timers

__all__ = ["MODES", "Actor", "PooledActor", "ThreadActor", "bind_constructing", "concrete_class", "mode_of"]

_constructing = threading.local()


def bind_constructing(cell: Cell | None) -> Cell | None:
    """Make `cell` the one `Actor.__init__` binds to on this thread; return the previous one."""
    previous = getattr(_constructing, "cell", None)
    _constructing.cell = cell
    return previous


class Actor(pykka.Actor):
    """The mode-neutral troupe actor. Subclass it; spawn it with `ActorSystem.spawn`.

    Adds to pykka's `Actor`: `actor_system`, `actor_name`, `timers` and
    `spawn` (children that stop before their parent).
    """

    _troupe_mode: ClassVar[str | None] = None

    _troupe_cell: Cell

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        """Bind the instance to the cell it is being spawned into.

        Call it from your ``__init__`` (``super().__init__()``) as with pykka.
        """
        cell = getattr(_constructing, "cell", None)
        if cell is None:
            msg = (
                f"{type(self).__name__} was instantiated directly; troupe actors are created by "
                f"system.spawn({type(self).__name__}, ...) or {type(self).__name__}.start(...)"
            )
            raise SpawnContextError(msg)
        self._troupe_cell = cell

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> ActorRef[Self]:
        """Start the actor on the process-wide default system (pykka's `Actor.start`).

        All arguments go to the constructor. The actor is also registered in
        `pykka.ActorRegistry`, so ``ActorRegistry.stop_all()`` stops it.
        """
        from actors.runtime.system import default_system  # noqa: PLC0415 - system imports this module

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
        """This actor's keyed timers (see `actors.runtime.timers.Timers`)."""
        return self._troupe_cell.timers

    def spawn(
        self,
        actor_class: type[pykka.Actor],
        *args: Any,
        name: str | None = None,
        mode: str | None = None,
        mailbox: MailboxSpec | None = None,
        **kwargs: Any,
    ) -> ActorRef[Any]:
        """Spawn a child: it is stopped before this actor stops (see `ActorSystem.spawn`)."""
        cell = self._troupe_cell
        return cell.system._spawn(  # noqa: SLF001
            actor_class, args, kwargs, name=name, mode=mode, mailbox=mailbox, parent=cell
        )

    def __str__(self) -> str:
        return str(self._troupe_cell.ref)

    def stop(self) -> None:
        """Stop the actor after the messages already queued (pykka's `Actor.stop`)."""
        self._troupe_cell.ref.tell(pykka.messages._ActorStop())  # noqa: SLF001


class PooledActor(Actor):
    """Base of actors that share the system's dispatcher threads (mode ``"pooled"``)."""

    _troupe_mode = "pooled"


class ThreadActor(Actor, pykka.ThreadingActor):
    """Base of actors with an OS thread each (mode ``"thread"``), like pykka's `ThreadingActor`.

    `use_daemon_thread` is honoured as in pykka.
    """

    _troupe_mode = "thread"


MODES: dict[str, type[Actor]] = {
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
    if mode is None:
        mode = own or "pooled"
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
    base = MODES[mode]
    if issubclass(actor_class, base):
        return actor_class, mode  # type: ignore[return-value]
    derived = type(
        actor_class.__name__,
        (actor_class, base),
        {"__module__": actor_class.__module__, "__qualname__": actor_class.__qualname__},
    )
    return derived, mode
