"""The shape every shared messaging service has: errors go to the asker; a bad tell is a dead letter.

A shared service (the broker, the history, the session manager, the
durable inbox) must keep serving whatever one client sends it. pykka runs
an ask's handler and a tell's the same way, and a tell whose handler raises
fails the actor. So a service's ref marks its asks (`_Asked`): the handler
then raises to the asker, who gets the error on its future, and the service
goes on; a told message whose handling raises is recorded as a dead letter
with reason ``REJECTED`` (the exception attached) and logged, and the
service goes on too.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from loguru import logger

from actors._core import MESSAGE_KINDS, Actor, ActorRef, DeadLetterReason

__all__ = ["Service", "ServiceRef"]


@attrs.frozen
class _Asked:
    """An ask of a service: its handler's errors go back to the asker instead of failing the service."""

    message: Any


class ServiceRef(ActorRef[Any]):
    """The address of a shared service: asks are marked so that the service tells them from tells."""

    __slots__ = ()

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        """Ask the service (see `ActorRef.ask`); a malformed request fails only this ask."""
        if message.__class__ in MESSAGE_KINDS:
            return super().ask(message, block=block, timeout=timeout)
        return super().ask(_Asked(message), block=block, timeout=timeout)


class Service(Actor):
    """Base of the messaging services: subclasses implement `handle`.

    Threading: `handle` runs on the service's own turn, one message at a time.
    """

    _troupe_ref_class: ClassVar[type[ActorRef[Any]]] = ServiceRef

    def on_receive(self, message: Any) -> Any:
        """Dispatch to `handle`; a failing tell becomes a ``REJECTED`` dead letter and a log line."""
        if message.__class__ is _Asked:
            return self.handle(message.message)
        try:
            return self.handle(message)
        except Exception as exc:  # noqa: BLE001 - a bad tell must not stop a shared service
            logger.opt(exception=exc).warning("{} rejected told message {!r}: {}", self, message, exc)
            self.actor_system.dead_letters.record(message, self.actor_ref, DeadLetterReason.REJECTED, exc)
            return None

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
        raise TypeError(msg)
