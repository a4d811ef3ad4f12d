"""The audit channel: where the runtime and the services report what happened, for the audit log.

Every `ActorSystem` has one (``system.audit``). Nothing listens by default:
then each stream's flag is False and an emitting site costs one attribute
read (``if audit.task_history:``), so the sites build no event they would
throw away. `actors.enable_audit_log` attaches a sink (the JSONL writer) and
turns the flags of the streams it records on; `disable_audit_log` detaches it.

The streams (the seed's five daily files):

- ``agent_activity``: agents registered, deregistered, status changes.
- ``message_audit``: each broker hand-off sent, received and processed,
  folded into one ``processed`` line written once it is over (opt-in, and
  sampled: one publication in `message_sample`; see `enable_audit_log`).
- ``task_history``: tasks submitted, assigned, completed, failed.
- ``performance``: performance samples (metrics, timings).
- ``errors``: failures, with the actor's name.

An event is a flat dict of JSON scalars (str, int, float, bool, None), with
at least an ``event`` key; the sink adds the ``timestamp`` and ``stream``.
A hot emitting site may hand a *deferred* event instead: a callable that
takes the sink's clock reading of the event (``system.clock``) and returns
that dict, or that dict already encoded: the text of one flat JSON object
(``{"event":...,...}``, compact, non-ASCII as is), which the JSONL writer
writes as it is (the broker's ``message_audit`` events, whose common
fields are encoded once per publication). The sink calls it later, on its
own thread, once per event and in the order the events were emitted (the
JSONL writer does so as it drains its queue), so the emitting thread pays
no dict building; the callable must read only what no other thread
changes after the emit. The hottest sites hand an `AuditRecord`: an
object that renders its own lines (one or more events of the same
reading) straight into the writer's batch, given the line's head, or says
it is not ready yet (its emitter is still filling it in).

Thread contract: `emit` may be called from any thread, and calls the sink on
that thread: a sink must neither block nor raise (the JSONL writer appends
to a queue its own thread drains). `attach` and `detach` may be called from
any thread; an emit racing with `detach` may still reach the old sink, which
must then drop it quietly.
"""

from __future__ import annotations

import itertools
import operator
import threading
from collections.abc import Callable, Iterable, Iterator

__all__ = ["STREAMS", "AuditChannel", "AuditRecord", "AuditSink"]

STREAMS = ("agent_activity", "message_audit", "task_history", "performance", "errors")
"""The audit streams, in the order the seed lists its files."""

AuditSink = Callable[[str, "dict[str, object] | AuditRecord | Callable[[float], dict[str, object] | str]"], None]
"""What receives events: ``sink(stream, fields)``, on the emitting thread; never blocks or raises.

`fields` is the event's dict, or a deferred event or an `AuditRecord` (see the module docstring).
"""


class AuditRecord:
    """A deferred event that renders itself: the JSONL writer calls `render` on its own thread, in queue order.

    For emitters whose events are as frequent as messages (the broker's
    ``message_audit``): no dict, no encoding pass, no slicing, one call per
    record however many lines it makes.
    """

    __slots__ = ()

    def render(self, head: str, reading: float, out: list[str]) -> bool:
        """Append this record's lines to `out`; return False (appending nothing) if it is not ready yet.

        `head` is the start of every line: ``{"timestamp":...,"stream":...,"system":...``
        (no closing brace); each line appended is `head`, then ``,`` and the
        event's members (``"event":...`` first, compact JSON, non-ASCII as
        is), then ``}`` and a newline. `reading` is the sink's clock reading
        of the emit. A record not ready is offered again (with what was
        queued after it) a moment later.
        """
        raise NotImplementedError

    def lost(self) -> None:
        """Called (on the emitting thread) by a sink that drops this record instead of queueing it."""


def _no_sink(stream: str, fields: object) -> None:  # noqa: ARG001 - a sink's signature
    """`AuditChannel.emit` while no sink is attached: the event is dropped."""
    if isinstance(fields, AuditRecord):
        fields.lost()


_CYCLE_AT_MOST = 4096
"""The longest sampling period made as a cycle (a pointer per step); past it, a counter."""


def _one_in(period: int) -> Iterator[bool]:
    """Return an iterator that yields True once every `period` steps, the first step first; atomic under the GIL.

    All C: ``next()`` on it is one builtin call, no Python frame.
    """
    if period <= _CYCLE_AT_MOST:
        return itertools.cycle((True, *(False,) * (period - 1)))
    return map(operator.not_, map(period.__rmod__, itertools.count()))  # count % period == 0


class AuditChannel:
    """One system's audit channel (see the module docstring).

    Attributes:
        agent_activity, message_audit, task_history, performance, errors:
            True while a sink records that stream; read them before building
            an event.
    """

    __slots__ = (
        "_lock",
        "_on_close",
        "_sink",
        "agent_activity",
        "emit",
        "errors",
        "message_audit",
        "performance",
        "sampled",
        "sampling",
        "task_history",
    )

    emit: AuditSink
    """Hand one event (or a deferred one) to the sink, if one is attached (check the stream's flag first); any thread.

    The attached sink itself (no call in between), or a function that drops
    the event while none is.
    """

    sampling: Iterator[bool]
    """``next(channel.sampling)``: whether this message event is one of the sampled ones; any thread.

    One in `message_sample`, the first first. An `itertools.cycle` of one
    True and ``message_sample - 1`` False: ``next()`` on it is one C call
    (atomic under the GIL), paid by every publication. ``next(sampling)``
    rather than ``sampled()``: a slot holding a method-wrapper is called
    through ``LOAD_METHOD``'s generic path and ``wrapper_call`` (CPython
    3.11), ~250 instructions a publication where ``next`` takes ~90
    (callgrind), ~1.6k of the ~8k a sampled one in 10 cost the publisher.
    """

    sampled: Callable[[], bool]
    """The same step as a call: ``sampling.__next__`` (the same iterator)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Invariant: a stream's flag is True only while _sink is set and records it.
        self._sink: AuditSink | None = None
        self._on_close: Callable[[], None] | None = None
        self.emit = _no_sink
        self.sampling = _one_in(1)
        self.sampled = self.sampling.__next__
        self.agent_activity = False
        self.message_audit = False
        self.task_history = False
        self.performance = False
        self.errors = False

    def __repr__(self) -> str:
        on = [stream for stream in STREAMS if getattr(self, stream)]
        return f"AuditChannel(streams={on})"

    @property
    def attached(self) -> bool:
        """Whether a sink is attached."""
        return self._sink is not None

    def attach(
        self,
        sink: AuditSink,
        streams: Iterable[str],
        *,
        message_sample: int = 1,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """Send the events of `streams` to `sink` from now on (one in `message_sample` of ``message_audit``).

        `on_close` is called by `close` (the system's shutdown), on the
        thread shutting the system down, after the sink is detached.

        Raises:
            RuntimeError: a sink is attached already (detach it first).
            ValueError: a stream not in `STREAMS`, or a `message_sample` below 1.
        """
        chosen = tuple(streams)
        unknown = sorted(set(chosen) - set(STREAMS))
        if unknown:
            msg = f"unknown audit streams {unknown}; the streams are {list(STREAMS)}"
            raise ValueError(msg)
        if isinstance(message_sample, bool) or not isinstance(message_sample, int) or message_sample < 1:
            msg = f"message_sample must be an int >= 1 (1: every message), got {message_sample!r}"
            raise ValueError(msg)
        with self._lock:
            if self._sink is not None:
                msg = f"an audit sink is attached already ({self._sink!r}); disable the audit log first"
                raise RuntimeError(msg)
            self._sink = sink
            self.emit = sink
            self._on_close = on_close
            self.sampling = _one_in(message_sample)
            self.sampled = self.sampling.__next__
            for stream in chosen:
                setattr(self, stream, True)

    def detach(self) -> AuditSink | None:
        """Stop sending events; return the sink that was attached (None if none was)."""
        with self._lock:
            for stream in STREAMS:
                setattr(self, stream, False)
            sink, self._sink = self._sink, None
            self.emit = _no_sink
            self._on_close = None
            return sink

    def close(self) -> None:
        """Detach the sink and call its `on_close` (the system calls this when it has shut down)."""
        with self._lock:
            on_close = self._on_close
        self.detach()
        if on_close is not None:
            on_close()
