"""Trace contexts carried with messages: the runtime's side of tracing (W3C ``traceparent``).

Context variables do not cross thread pools by themselves (a dispatcher
thread runs whichever actor is next), so the runtime carries the context in
the mailbox item: with tracing on, `ActorRef.tell` and ``ask`` wrap the
message in a `Traced` built by the system's `Tracer` on the sender's thread
(`Tracer.send`), and the turn that takes it (any mode) unwraps it and
gives it to `Tracer.process`, which calls `Tracer.begin`, makes the
handler's context current (`CURRENT`) while the handler runs (an asyncio
handler's coroutine: until it ends, in its task), then `Tracer.end`. A
message the handler sends is sent under that context, so a chain of tells
and asks across modes keeps one trace id.

Off (no system has a tracer) the hot path pays one check of a module global
(`ActorRef.tell`/``ask``) and nothing else; a turn never looks for a
wrapper it was not given (`Traced` is one of the `KINDS`, found by the
lookup every message has anyway).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from typing import TYPE_CHECKING, Any, Self

from actors._core._pykka import handle_receive
from actors.errors import ObservabilityConfigError

try:
    from _collections import _tuplegetter  # type: ignore[import-not-found]  # what namedtuple's fields are (C getters)
except ImportError:  # pragma: no cover - another implementation of Python
    from operator import itemgetter as _itemgetter

    def _tuplegetter(index: int, doc: str) -> Any:
        return property(_itemgetter(index), doc=doc)


if TYPE_CHECKING:
    from collections.abc import Coroutine

    from actors._core.cell import Cell

__all__ = ["CURRENT", "TRACING", "TraceContext", "Traced", "Tracer", "in_trace", "run_traced"]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class TraceContext(tuple[str, str, bool]):
    """One span's identity as W3C Trace Context carries it: trace id, span id, sampled flag. Immutable.

    A tuple ``(trace_id, span_id, sampled)`` underneath (compared only with
    other contexts), built without the checks by ``tuple.__new__(TraceContext,
    (...))`` from ids a tracer drew. What the public API gives and takes
    (`use_trace`, ``current_trace``); on the message path a tracer carries
    plain tuples of the same three items instead (see `CURRENT`).

    Args:
        trace_id: 32 lowercase hex digits, not all zero.
        span_id: 16 lowercase hex digits, not all zero.
        sampled: the ``sampled`` trace flag.

    Raises:
        ObservabilityConfigError: an id is malformed.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        trace_id: str
        span_id: str
        sampled: bool
    else:
        trace_id = _tuplegetter(0, "32 lowercase hex digits.")
        span_id = _tuplegetter(1, "16 lowercase hex digits.")
        sampled = _tuplegetter(2, "The ``sampled`` trace flag.")

    def __new__(cls, trace_id: str, span_id: str, *, sampled: bool = True) -> Self:
        if not (isinstance(trace_id, str) and len(trace_id) == 32 and _is_hex(trace_id) and trace_id.strip("0")):  # noqa: PLR2004
            msg = f"TraceContext: trace_id must be 32 lowercase hex digits, not all zero; got {trace_id!r}"
            raise ObservabilityConfigError(msg)
        if not (isinstance(span_id, str) and len(span_id) == 16 and _is_hex(span_id) and span_id.strip("0")):  # noqa: PLR2004
            msg = f"TraceContext: span_id must be 16 lowercase hex digits, not all zero; got {span_id!r}"
            raise ObservabilityConfigError(msg)
        return _new_tuple(cls, (trace_id, span_id, bool(sampled)))

    def __getnewargs_ex__(self) -> tuple[tuple[str, str], dict[str, bool]]:
        return (self[0], self[1]), {"sampled": self[2]}

    def __setattr__(self, name: str, value: object) -> None:
        msg = f"TraceContext is immutable; cannot set {name!r}"
        raise AttributeError(msg)

    @classmethod
    def from_traceparent(cls, header: str) -> TraceContext:
        """Parse a W3C ``traceparent`` header (version 00).

        Raises:
            ObservabilityConfigError: it is not ``00-<32 hex>-<16 hex>-<2 hex>``.
        """
        match = _TRACEPARENT.fullmatch(header) if isinstance(header, str) else None
        if match is None:
            msg = (
                f"malformed traceparent {header!r}; expected '00-<32 hex trace id>-<16 hex span id>-<2 hex flags>' "
                "(W3C Trace Context)"
            )
            raise ObservabilityConfigError(msg)
        return cls(match[1], match[2], sampled=bool(int(match[3], 16) & 1))

    @property
    def traceparent(self) -> str:
        """This context as a W3C ``traceparent`` header."""
        return f"00-{self[0]}-{self[1]}-{'01' if self[2] else '00'}"

    # Equal only to another context (not to a tuple of the same items), and not ordered.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceContext):
            return False if isinstance(other, tuple) else NotImplemented  # a tuple's own __eq__ would say equal
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, TraceContext):
            return True if isinstance(other, tuple) else NotImplemented
        return tuple.__ne__(self, other)

    __hash__ = tuple.__hash__

    def __lt__(self, other: object) -> bool:
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__

    def __repr__(self) -> str:
        return f"TraceContext({self.traceparent!r})"


_new_tuple = tuple.__new__


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


CURRENT: contextvars.ContextVar[tuple[str, str, bool] | None] = contextvars.ContextVar("troupe_trace", default=None)
"""The trace context messages are sent under on this thread or task: the running handler's, or one set by the user.

A ``(trace_id, span_id, sampled)`` tuple: a `TraceContext` (the user's, or
a tracer's), or a plain tuple of the same three items (what a tracer's
message path makes: built by one ``BUILD_TUPLE``, against ~1,400
instructions for a tuple subclass's ``tuple.__new__``). Read it by index;
the public readers (`actors.observability.current_trace`) give a `TraceContext`.
"""

TRACING: list[None] = []
"""Not empty while some system has a tracer (one item each; `set_tracer` keeps it).

For a service's own hot path that puts mail straight into a cell's queue
(the router ref's, the broker's outlets'): ``if TRACING:`` costs one global load and a truth test
of a list, and then `actors._core.ref.trace_message` wraps the message as ``ActorRef.tell``
does.
"""


class Traced:
    """A mailbox item's message with the trace context it was sent under (built by `Tracer.send`).

    No Python ``__init__``: `Traced.of` builds one; a tracer's hot path
    writes ``traced = Traced()`` and the two stores out (a Python
    ``__init__`` call is ~900 instructions more, callgrind).

    Attributes:
        message: what was sent.
        context: the sending span's context (the consumer's parent): a
            ``(trace_id, span_id, sampled)`` tuple, a `TraceContext` or a
            plain tuple (see `CURRENT`).
    """

    __slots__ = ("context", "message")

    message: Any
    context: tuple[str, str, bool]

    @classmethod
    def of(cls, message: Any, context: tuple[str, str, bool]) -> Traced:
        """Return `message` wrapped with `context`."""
        traced = cls()
        traced.message = message
        traced.context = context
        return traced

    def __repr__(self) -> str:
        trace_id, span_id, sampled = self.context
        return f"Traced({self.message!r}, 00-{trace_id}-{span_id}-{'01' if sampled else '00'})"


class Tracer:
    """``system.tracer``: what the tracing service implements. The base class records nothing.

    Thread contract: `send` runs on the sender's thread (any thread, a
    handler's or not); `begin` and `end` on the turn of the receiving
    actor (its dispatcher thread, its own thread, or the event loop; for a
    coroutine handler `end` runs in its task when it ends). They must not
    raise.
    """

    def send(self, cell: Cell, message: Any) -> Traced:
        """Return `message` wrapped with the context to carry to `cell`'s actor (a new span under `CURRENT`)."""
        raise NotImplementedError

    def begin(self, cell: Cell, traced: Traced) -> tuple[Any, tuple[str, str, bool]]:
        """The handler of `traced` is about to run: return (a handle for `end`, the context it runs under).

        A handle of None means nothing to end: `end` is then not called (a
        message in a trace not sampled pays no second call).
        """
        raise NotImplementedError

    def end(self, handle: Any, exc: BaseException | None) -> None:
        """The handler begun with `handle` ended (`exc`: what it raised, or None)."""
        raise NotImplementedError

    def close(self) -> None:
        """This tracer was replaced or removed (`set_tracer`, the system's shutdown): flush, stop its threads.

        Runs on the thread that replaced it, after the swap; `end` may still
        be called later, by a handler that began before.
        """

    def process(self, cell: Cell, actor: Any, traced: Traced, proxy: bool) -> Any:  # noqa: FBT001 - the hot path's positional flag
        """Run the handler of `traced` under its context (`begin`, `CURRENT`, the handler, `end`); raise what it does.

        What every turn loop calls for a `Traced` item (`proxy`: the message
        is a proxy call, else ``on_receive`` takes it), on the receiving
        actor's turn. An asyncio actor's coroutine result comes back
        wrapped, so that the context stays current in its task and `end`
        runs when it ends. A tracer may override it to do the same in one
        call: it then need not implement `begin`, and `end` is still what
        `in_trace` calls when an asyncio handler's coroutine ends.
        """
        handle, context = self.begin(cell, traced)
        message = traced.message
        token = CURRENT.set(context)
        try:
            result = handle_receive(actor, message) if proxy else actor.on_receive(message)
        except BaseException as exc:
            if handle is not None:
                self.end(handle, exc)
            raise
        finally:
            CURRENT.reset(token)
        if cell.aio is not None and asyncio.iscoroutine(result):
            return in_trace(result, self, handle, context)
        if handle is not None:  # None: nothing recorded (a trace not sampled), one Python call less
            self.end(handle, None)
        return result


def run_traced(cell: Cell, actor: Any, traced: Traced, *, proxy: bool) -> Any:
    """Run the handler of a `Traced` item (`Tracer.process`; the turn loops call it; it raises what the handler does).

    Tracing turned off while the item was queued: the handler runs without a context.
    """
    tracer = cell.system.tracer
    if tracer is None:
        message = traced.message
        return handle_receive(actor, message) if proxy else actor.on_receive(message)
    return tracer.process(cell, actor, traced, proxy)


async def in_trace(coro: Coroutine[Any, Any, Any], tracer: Tracer, handle: Any, context: tuple[str, str, bool]) -> Any:
    """Await an asyncio handler's coroutine under `context`, then `Tracer.end` `handle` (if not None)."""
    token = CURRENT.set(context)
    try:
        result = await coro
    except BaseException as exc:
        if handle is not None:
            tracer.end(handle, exc)
        raise
    finally:
        CURRENT.reset(token)
    if handle is not None:
        tracer.end(handle, None)
    return result
