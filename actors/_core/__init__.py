"""The machinery under every troupe actor: system, modes, cells, mailboxes, timers, futures.

This package is private (trio's ``_core``). Users import from `actors`. The
services (`actors.routing`, `actors.state`, `actors.supervisor` and the ones
after them) import from here only the names below, the seams the core offers
them; they never import one of its modules directly (tests/test_layers.py
checks it).

The public ones (re-exported by `actors`) are the actor base classes, refs,
futures, clocks, timers, dead letters and supervision's data. The low-level
ones are for services built on the runtime:

- `Cell`: the type of ``ref.actor_inbox``, for a service (the router) that
  must put mail straight into a routee's queue on the sender's thread.
- `Envelope`: the mailbox item of a tell with a `Receipt`
  (``Envelope(message, reply_to=receipt)``, what ``ref._post_tell`` queues), for
  a service that appends one to a plain ref's ``cell.queue`` itself and then
  schedules the cell as `Cell.put` does (the broker's sampled hand-offs);
  pykka's own type, imported in `actors._core._pykka` only.
- `MESSAGE_KINDS`: the message classes a cell interprets itself (proxy calls,
  stops, timers, `Terminated`); a router never routes them.
- `STOP`: the system message that stops a cell (``cell.post_system(STOP)``).
- `FrozenDict`: the immutable, hashable mapping statistics snapshots hold.
- `check_seconds`, `check_count`, `check_interface`, `check_ref`: constructor
  argument checks whose messages name the argument and what it expects.
- `Probe`, `CellStats`, `HANDLER_BUCKETS`, `set_observer`, `live_cells`,
  `cell_mode`, `cell_state`, `pool_size`: the runtime's measured turns and the views a
  metrics service reads (`actors._core.observe`; ``system.observer``).
- `Tracer`, `Traced`, `TraceContext`, `CURRENT_TRACE`, `set_tracer`: the
  trace context the runtime carries with each message while a system has a
  tracer (`actors._core.tracing`; ``system.tracer``); `TRACING` (not empty
  while any system has one) and `trace_message`, for a service's hot path
  that appends to a cell's queue itself (the router ref, the broker's outlets);
  `handle_receive` (a proxy call's handler) and `in_trace` (an asyncio
  handler's coroutine under a context), for a tracer's own `Tracer.process`.

`QueuedMessage` and `TakenMessages` (public) are what `Actor.take_queued`
gives a batching actor: the messages queued behind the current one, each with
the reply future its handler must settle; `Actor.take_queued_tells` takes
the plain tells of one class, the messages themselves, at a fraction of the
cost (for notifications, which have no reply).

`AuditChannel` (``system.audit``, with `AUDIT_STREAMS`, `AuditSink` and `AuditRecord`) is
where the runtime and the services emit audit events; `CheckHealth`,
`HealthReport` and `HealthStatus` are the health question every service
actor answers (services cannot read each other's state).
"""

from actors._core._pykka import Envelope, handle_receive
from actors._core.actor import MODES, Actor, AsyncioActor, PooledActor, ThreadActor
from actors._core.batching import QueuedMessage, TakenMessages
from actors._core.cell import STOP, Cell
from actors._core.checks import check_count, check_interface, check_ref, check_seconds
from actors._core.clock import Clock, ManualClock, MonotonicClock
from actors._core.deadletters import DeadLetter, DeadLetterReason, DeadLetters, DeadLetterStatistics
from actors._core.events import STREAMS as AUDIT_STREAMS
from actors._core.events import AuditChannel, AuditRecord, AuditSink
from actors._core.frozendict import FrozenDict
from actors._core.future import Future, Receipt
from actors._core.health import CheckHealth, HealthReport, HealthStatus
from actors._core.mailbox import BoundedMailbox, FifoMailbox, MailboxSpec, PriorityMailbox
from actors._core.messages import KINDS as MESSAGE_KINDS
from actors._core.observe import (
    HANDLER_BUCKETS,
    CellStats,
    Probe,
    cell_mode,
    cell_state,
    live_cells,
    pool_size,
    set_observer,
    set_tracer,
    trace_message,
)
from actors._core.ref import ActorRef
from actors._core.supervision import (
    DEFAULT_POLICY,
    Backoff,
    ChildSpec,
    Decider,
    Directive,
    RestartType,
    SupervisionPolicy,
    SupervisionStrategy,
    Terminated,
)
from actors._core.system import ActorSystem, default_system
from actors._core.timers import Scheduler, TimerHandle, Timers
from actors._core.tracing import CURRENT as CURRENT_TRACE
from actors._core.tracing import TRACING, TraceContext, Traced, Tracer, in_trace

__all__ = [
    "AUDIT_STREAMS",
    "CURRENT_TRACE",
    "DEFAULT_POLICY",
    "HANDLER_BUCKETS",
    "MESSAGE_KINDS",
    "MODES",
    "STOP",
    "TRACING",
    "Actor",
    "ActorRef",
    "ActorSystem",
    "AsyncioActor",
    "AuditChannel",
    "AuditRecord",
    "AuditSink",
    "Backoff",
    "BoundedMailbox",
    "Cell",
    "CellStats",
    "CheckHealth",
    "ChildSpec",
    "Clock",
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetterStatistics",
    "DeadLetters",
    "Decider",
    "Directive",
    "Envelope",
    "FifoMailbox",
    "FrozenDict",
    "Future",
    "HealthReport",
    "HealthStatus",
    "MailboxSpec",
    "ManualClock",
    "MonotonicClock",
    "PooledActor",
    "PriorityMailbox",
    "Probe",
    "QueuedMessage",
    "Receipt",
    "RestartType",
    "Scheduler",
    "SupervisionPolicy",
    "SupervisionStrategy",
    "TakenMessages",
    "Terminated",
    "ThreadActor",
    "TimerHandle",
    "Timers",
    "TraceContext",
    "Traced",
    "Tracer",
    "cell_mode",
    "cell_state",
    "check_count",
    "check_interface",
    "check_ref",
    "check_seconds",
    "default_system",
    "handle_receive",
    "in_trace",
    "live_cells",
    "pool_size",
    "set_observer",
    "set_tracer",
    "trace_message",
]
