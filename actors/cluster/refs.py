"""`RemoteRef`: a location-transparent reference to an actor anywhere in a cluster.

It has `ActorRef`'s surface (`tell`, `ask`, `proxy`, `stop`, `is_alive`) and is
bound to an *endpoint*: the node it was resolved on (a `Node`) or the driver's
client. It pickles to its `Address`; unpickled on a node (inside a message or a
reply), it binds to that node. Sending through it goes to the endpoint's router,
which finds the actor's current node in the directory: so it keeps working
after the actor migrates or is restarted on another node.

Death watch: ``self.watch(remote_ref)`` in an actor on a cluster node delivers
``Terminated(remote_ref, reason)`` when the remote actor stops (reason: None,
or the exception it failed with) or when its node goes DOWN (reason: a
`NodeDownError`). The ref's ``_cell`` is a `WatchPoint`, the object the core's
death watch asks for ``on_terminated`` / ``remove_on_terminated`` / ``ref`` /
``reason``, as it does of a cell.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from actors.cluster.address import Address

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors._core import Future

__all__ = ["Endpoint", "RemoteProxy", "RemoteRef", "WatchPoint", "decoding"]

_context = threading.local()


class Endpoint(Protocol):
    """What a `RemoteRef` sends through: a cluster node, or the driver's client."""

    def send_tell(self, ref: RemoteRef, message: Any) -> None:
        """Send a tell."""

    def send_ask(self, ref: RemoteRef, message: Any, *, inline: bool = False) -> Future[Any]:
        """Send an ask; return the future of its reply (`inline`: the caller blocks on it untimed)."""

    def send_call(self, ref: RemoteRef, attribute: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """Call a method of the actor; return the future of its result."""

    def send_stop(self, ref: RemoteRef) -> Future[Any]:
        """Stop the actor; return the future of whether it was running."""

    def watch_point(self, ref: RemoteRef) -> WatchPoint:
        """Return the watch point the core's death watch uses for the actor."""

    def is_alive(self, ref: RemoteRef) -> bool:
        """Return whether the actor is known and its node not DOWN."""


class decoding:  # noqa: N801 - a context manager read as a phrase (`with decoding(node):`)
    """Bind the `RemoteRef`s unpickled on this thread, inside the block, to `endpoint`."""

    def __init__(self, endpoint: Endpoint | None) -> None:
        self._endpoint = endpoint

    def __enter__(self) -> None:
        self._saved = getattr(_context, "endpoint", None)
        _context.endpoint = self._endpoint

    def __exit__(self, *_exc: object) -> None:
        _context.endpoint = self._saved


def _resolve(address: Address) -> RemoteRef:
    return RemoteRef(address, getattr(_context, "endpoint", None))


class RemoteRef:
    """A reference to a cluster actor, wherever it lives; pickles to its `Address`.

    Thread contract: every method may be called from any thread. Messages sent
    through refs of one endpoint, from one thread, to one actor arrive in send order.
    """

    __slots__ = ("_endpoint", "_wp", "address")

    def __init__(self, address: Address, endpoint: Endpoint | None) -> None:
        self.address = address
        self._endpoint = endpoint
        self._wp: WatchPoint | None = None

    def __reduce__(self) -> tuple[Callable[[Address], RemoteRef], tuple[Address]]:
        return _resolve, (self.address,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteRef) and other.address.name == self.address.name

    def __hash__(self) -> int:
        return hash(("RemoteRef", self.address.name))

    def __repr__(self) -> str:
        return f"<RemoteRef {self.address}>"

    __str__ = __repr__

    @property
    def actor_name(self) -> str:
        """The actor's name in the cluster."""
        return self.address.name

    @property
    def endpoint(self) -> Endpoint:
        """The node or client this ref sends through."""
        if self._endpoint is None:
            msg = (
                f"{self} was unpickled outside any cluster node or client, so it has no way to send; "
                "unpickle it in a message received on a node, or get it with Cluster.lookup()"
            )
            raise pykka.ActorDeadError(msg)
        return self._endpoint

    def tell(self, message: Any) -> None:
        """Send `message` to the actor (a dead letter if it has stopped or its node is DOWN).

        Raises:
            MessageNotPicklableError: `message` does not pickle.
        """
        endpoint = self._endpoint
        (self.endpoint if endpoint is None else endpoint).send_tell(self, message)  # the property raises

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        """Send `message` and wait for the reply, or return a future with ``block=False``.

        An actor that has stopped, or whose node is DOWN, fails the ask with
        `ActorDeadError`; it never hangs on a dead node.

        Raises:
            MessageNotPicklableError: `message` does not pickle.
            pykka.Timeout: with `block`, no reply within `timeout` seconds.
        """
        if block and timeout is None:  # it may run on this thread (as the core's inline ask: `Node.send_ask`)
            return self.endpoint.send_ask(self, message, inline=True).get()
        future = self.endpoint.send_ask(self, message)
        return future.get(timeout=timeout) if block else future

    def proxy(self) -> RemoteProxy:
        """Return a proxy: ``ref.proxy().method(*args)`` is a future of the method's result."""
        return RemoteProxy(self)

    def stop(self, *, block: bool = True, timeout: float | None = None) -> Any:
        """Stop the actor for good (as `ActorRef.stop`); True if it was alive."""
        future = self.endpoint.send_stop(self)
        return future.get(timeout=timeout) if block else future

    def is_alive(self) -> bool:
        """Return whether the directory knows the actor (on a node that is not DOWN)."""
        return self.endpoint.is_alive(self)

    @property
    def _cell(self) -> WatchPoint:
        # The core's death watch (`Actor.watch`) asks a ref for its cell; a
        # remote ref's is its watch point on the endpoint, the same object for
        # as long as this ref lives (so `Terminated.ref._cell` finds it again).
        if self._wp is None:
            self._wp = self.endpoint.watch_point(self)
        return self._wp


class RemoteProxy:
    """Method calls on a remote actor: ``proxy.method(*args, **kwargs)`` returns a future."""

    __slots__ = ("_ref",)

    def __init__(self, ref: RemoteRef) -> None:
        self._ref = ref

    def __getattr__(self, attribute: str) -> Callable[..., Future[Any]]:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        ref = self._ref

        def call(*args: Any, **kwargs: Any) -> Future[Any]:
            return ref.endpoint.send_call(ref, attribute, args, kwargs)

        call.__name__ = attribute
        return call


class WatchPoint:
    """The stand-in for a remote actor's cell in the core's death watch, one per endpoint and actor.

    The core calls `on_terminated` (in the watcher's turn) and expects each
    callback to be called once with this object when the actor is gone, with
    `reason` set. Thread contract: any thread; callbacks run outside the lock.
    """

    def __init__(self, ref: RemoteRef, on_first: Callable[[WatchPoint], None]) -> None:
        self.ref = ref
        self.reason: BaseException | None = None
        self.fired = False
        self._lock = threading.Lock()
        self._callbacks: dict[object, Callable[[Any], None]] = {}
        self._on_first = on_first
        self._asked = False

    def on_terminated(self, callback: Callable[[Any], None], *, key: object = None) -> None:
        """Call `callback(self)` once the remote actor is gone (at once if it is)."""
        with self._lock:
            if not self.fired:
                self._callbacks[callback if key is None else key] = callback
                first, self._asked = not self._asked, True
                if not first:
                    return
        if self.fired:
            callback(self)
            return
        self._on_first(self)

    def remove_on_terminated(self, key: object) -> None:
        """Forget the callback registered under `key`."""
        with self._lock:
            self._callbacks.pop(key, None)

    def fire(self, reason: BaseException | None) -> None:
        """The remote actor is gone for `reason`: call every callback once."""
        with self._lock:
            if self.fired:
                return
            self.fired, self.reason = True, reason
            callbacks, self._callbacks = list(self._callbacks.values()), {}
        for callback in callbacks:
            callback(self)
