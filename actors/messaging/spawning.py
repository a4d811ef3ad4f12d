"""`spawn_service`: spawn a messaging service and get its ref with its type (for type checkers).

``system.spawn`` returns an `ActorRef`; a service's ref is a subclass with
the service's methods (`BrokerRef.publish`, `HistoryRef.query`...). This
overloaded helper returns it typed::

    broker = spawn_service(system, MessageBroker, history=history)   # a BrokerRef
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, overload

from actors.messaging.broker import BrokerRef, MessageBroker
from actors.messaging.history import HistoryRef, MessageHistory
from actors.messaging.inbox import DurableInbox, InboxRef
from actors.messaging.reliable import ConsumerController, ConsumerRef, ProducerController, ProducerRef
from actors.messaging.sessions import SessionManager, SessionRef

if TYPE_CHECKING:
    from actors._core import ActorRef

__all__ = ["spawn_service"]


class _Spawner(Protocol):
    def spawn(self, actor_class: Any, /, *args: Any, **kwargs: Any) -> ActorRef[Any]: ...


@overload
def spawn_service(spawner: _Spawner, cls: type[MessageBroker], /, *args: Any, **kwargs: Any) -> BrokerRef: ...
@overload
def spawn_service(spawner: _Spawner, cls: type[MessageHistory], /, *args: Any, **kwargs: Any) -> HistoryRef: ...
@overload
def spawn_service(spawner: _Spawner, cls: type[SessionManager], /, *args: Any, **kwargs: Any) -> SessionRef: ...
@overload
def spawn_service(spawner: _Spawner, cls: type[DurableInbox], /, *args: Any, **kwargs: Any) -> InboxRef: ...
@overload
def spawn_service(spawner: _Spawner, cls: type[ProducerController], /, *args: Any, **kwargs: Any) -> ProducerRef: ...
@overload
def spawn_service(spawner: _Spawner, cls: type[ConsumerController], /, *args: Any, **kwargs: Any) -> ConsumerRef: ...
def spawn_service(spawner: _Spawner, cls: type[Any], /, *args: Any, **kwargs: Any) -> ActorRef[Any]:
    """Spawn `cls` with `spawner` (an `ActorSystem`, or an actor for a child) and return its typed ref.

    Raises:
        TypeError: the ref is not the class's own kind (a subclass overrode its ref class).
    """
    ref: ActorRef[Any] = spawner.spawn(cls, *args, **kwargs)
    expected: type = cls._troupe_ref_class
    if not isinstance(ref, expected):
        msg = f"{cls.__name__} was spawned with a {type(ref).__name__}, not its {expected.__name__}"
        raise TypeError(msg)
    return ref
