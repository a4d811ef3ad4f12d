"""The shape every shared messaging service has: errors go to the asker; a bad tell is a dead letter.

A shared service (the broker, the history, the session manager, the
durable inbox) must keep serving whatever one client sends it. The core's
seam for that rule is `Actor.refusals` (README, "Shared services"): an ask's
error reaches the asker, and a told message whose handler raises one of the
refusals is recorded as a dead letter with reason ``REJECTED`` (the
exception attached) and logged, and the service goes on. The messaging
services refuse every `Exception` of a told message: a handler's own bug
still reaches the log and the dead letters, with the exception, and one
client's message never stops a service the others share.
"""

from __future__ import annotations

from typing import Any, ClassVar

from actors._core import Actor, ActorRef
from actors.errors import MessageNotUnderstoodError

__all__ = ["Service", "ServiceRef"]


class ServiceRef(ActorRef[Any]):
    """The address of a shared service (subclassed by each service for its typed calls)."""

    __slots__ = ()


class Service(Actor):
    """Base of the messaging services: subclasses implement `handle`.

    Threading: `handle` runs on the service's own turn, one message at a time.
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = ServiceRef
    refusals: ClassVar[tuple[type[BaseException], ...]] = (Exception,)

    def on_receive(self, message: Any) -> Any:
        """Dispatch to `handle`; a failing tell is a ``REJECTED`` dead letter and a log line (`refusals`)."""
        return self.handle(message)

    def take_told(self, cls: type, limit: int = 1 << 30) -> list[Any]:
        """Take the told messages of class `cls` queued behind the current one (`Actor.take_queued`).

        From ``on_stop``: a system shutdown stops a service without waiting
        for its mailbox, and what it accepted with a promise (an append, a
        send) may still be queued; taking it lets ``on_stop`` keep the
        promise. Anything else stays queued, where the runtime settles it
        (asks fail with `ActorDeadError`, tells become dead letters).
        """
        with self.take_queued(lambda queued: queued.message.__class__ is cls, limit=limit) as taken:
            return [queued.message for queued in taken]

    def handle(self, message: Any) -> Any:
        """Handle one request and return the reply; raise to refuse it."""
        msg = f"{type(self).__name__} does not understand {type(message).__name__} messages: {message!r}"
        raise MessageNotUnderstoodError(msg)
