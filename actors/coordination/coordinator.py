"""`Coordinator`: the agent registry, discovery, registry watches and task assignment, as one actor.

Ask it the request messages of `actors.coordination.messages`; a bad request
raises its error to the asker and the coordinator keeps serving. What agents
tell it (heartbeats, results, progress, declarations) never fails it: a bad
one is logged and recorded as a dead letter (``HANDLER_FAILED``).

Registry. An agent registers with its `AgentDescriptor`; the coordinator
watches it, so an agent that stops is deregistered when its `Terminated`
arrives (one turn). A registration under an id already held by another actor
replaces that stale entry and says so (``RegistrationResult.replaced``). The
registry is indexed by capability and by type: a query starts from the
smallest index set it can.

Status and health are derived here (see `status` and `health`), never set:
from the agent's tasks in flight, its declarations, and whether it is heard
from. An agent not heard from for its heartbeat timeout (default: twice its
interval, 60 s for the default 30 s) is OFFLINE: its tasks in flight are
reassigned, and it gets none until it is heard again. The sweep runs every
`tick` seconds, so detection takes at most timeout + one tick.

Assignment is pull-based. An agent's credit is ``max_concurrent_tasks -
in_flight``; the coordinator never sends it more. A new task goes to the best
capable agent with credit: not unhealthy (degraded after healthy), then least
in flight, then lowest moving-average run time (among the first 8 capable of
a load level), then round robin. An agent that gets credit back pulls the
best queued task it can run, in the same turn and before its status is
re-derived: one that goes from a task straight to the next stays BUSY (no
IDLE/BUSY pair of events, no trip through the ready buckets). A task nobody
can take now waits in a queue per set of required capabilities, ordered by
``submitted_at - priority * aging`` (so a priority level is worth `aging`
seconds of waiting and nothing starves), and is never dropped: it waits
until a capable agent has credit, or its schedule-to-start timeout fails it
with an error naming the missing capabilities. Timeouts and retries are timer messages on the system clock.

Delivery is at least once: an attempt in flight on an agent that stops or
goes offline is reassigned at once (it counts as an attempt; the attempt
number and idempotency key travel with it). Only the current attempt's result
counts; a late one from an earlier attempt is dropped.

Threading: every handler runs on the coordinator's turn. Task futures are
settled on it; their callbacks run there too, so keep them short.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any, ClassVar, TypeAlias

import attrs
import pykka
from loguru import logger

from actors._core import (
    Actor,
    CheckHealth,
    DeadLetterReason,
    FrozenDict,
    Future,
    HealthReport,
    HealthStatus,
    Terminated,
    check_count,
)
from actors.coordination.audit import agent_event, task_event
from actors.coordination.health import Health, HealthPolicy, HealthTracker
from actors.coordination.identity import AgentDescriptor, AgentId
from actors.coordination.messages import (
    AgentDeclared,
    AgentHeartbeat,
    AgentInfo,
    CancelRun,
    CancelTask,
    Deregister,
    FindAgents,
    GetAgent,
    GetCoordinationStatistics,
    GetTask,
    ListAgentTypes,
    ListCapabilities,
    Register,
    RegistrationResult,
    RegistryEvent,
    RegistryEventKind,
    RegistrySnapshot,
    Submit,
    TaskFinished,
    TaskProgress,
    UnwatchRegistry,
    WatchRegistry,
    _run_task,
)
from actors.coordination.statistics import CoordinationStatistics, _Counters, merged
from actors.coordination.status import AgentStatus, StatusChange, derive_status, is_legal
from actors.coordination.tasks import (
    FINAL_STATES,
    NO_TIMEOUTS,
    TaskHandle,
    TaskInfo,
    TaskSpec,
    TaskState,
    _handle,
)
from actors.errors import (
    AgentRegistrationError,
    CoordinationStoppedError,
    MessageNotUnderstoodError,
    TaskCancelledError,
    TaskSpecError,
    TaskTimeoutError,
    TroupeError,
    TroupeInternalError,
    UnknownTaskError,
)

__all__ = ["Coordinator", "submit_task"]

# Enum members as module globals: reading one off its class goes through the enum machinery
# (~0.2 µs in Python 3.11, a global ~0.02 µs), and a task's path read ~20 of them.
_QUEUED, _RUNNING, _BACKOFF = TaskState.QUEUED, TaskState.RUNNING, TaskState.BACKOFF
_COMPLETED, _FAILED, _TIMED_OUT, _CANCELLED = (
    TaskState.COMPLETED,
    TaskState.FAILED,
    TaskState.TIMED_OUT,
    TaskState.CANCELLED,
)
_IDLE, _WORKING, _BUSY, _OFFLINE = AgentStatus.IDLE, AgentStatus.WORKING, AgentStatus.BUSY, AgentStatus.OFFLINE
_BLOCKED, _COLLABORATING = AgentStatus.BLOCKED, AgentStatus.COLLABORATING
_HEALTHY = Health.HEALTHY

_EMA_ALPHA = 0.2
_RANK_SCAN = 8  # capable agents compared by run time within one load level
_SMALL_INDEX = 32  # below this many agents, rank a capability's index set exactly
# A ready bucket's key: the agent's in-flight count, plus this offset for its health (none:
# it may not take work). An int sorts as the pair (health rank, in flight) did, without a
# tuple made and compared per placement.
_BUCKET_OFFSET = {Health.HEALTHY: 0, Health.DEGRADED: 1 << 40}
_NO_TASKS: frozenset[tuple[str, int]] = frozenset()
_FREE_MOVES = (_IDLE, _WORKING, _BUSY)
# Registrations told behind one that one turn handles with it (`Coordinator._on_register`): with
# the system's throughput of 32 messages a turn, a turn holds its dispatcher for at most ~2,000
# registrations (~15 ms at 100,000 agents).
_REGISTER_BATCH = 64
_DECLARED = (_BLOCKED, _COLLABORATING)
# Reports told behind one that one turn handles with it (`Coordinator._on_finished_batch`): a
# turn of 32 messages then holds its dispatcher for at most ~2,000 reports (~6 ms).
_FINISHED_BATCH = 64
_SUBMIT_BATCH = 64  # `Submit`s told behind one with its own future (`Coordinator._on_submit_batch`)


@attrs.frozen
class _Sweep:
    """The heartbeat sweep's timer message."""


@attrs.frozen
class _TaskTimer:
    """A task timer: ``which`` of its timeouts, or ``"retry"``, for attempt `attempt`."""

    task_id: str
    attempt: int
    which: str


class _Agent:
    """The coordinator's entry for one registered agent."""

    __slots__ = (
        "beats",
        "blocked",
        "bucket",
        "caps",
        "cell",
        "descriptor",
        "ema",
        "health",
        "id",
        "in_flight",
        "info",
        "lag_degraded",
        "last_heard",
        "max",
        "offline",
        "ref",
        "registered_at",
        "removed",
        "session",
        "status",
        "status_seq",
        "text",
        "timeout",
        "tracker",
    )

    def __init__(
        self,
        ref: pykka.ActorRef[Any],
        cell: object,
        descriptor: AgentDescriptor,
        now: float,
        beat_class: tuple[float, float, OrderedDict[_Agent, None]],
    ) -> None:
        # Every field set once, here: a registration's path stores nothing twice (and a
        # module global is ~10x cheaper than an enum member read off its class).
        self.ref = ref
        # The agent's cell (``ref.actor_inbox``) keys it by actor: its URN is never read (drawing
        # and formatting one on first read was ~40% of a registration's CPU at 100,000 agents).
        self.cell = cell
        self.descriptor = descriptor
        self.id = descriptor.id
        self.caps = descriptor.capabilities
        self.max = descriptor.max_concurrent_tasks
        # Invariant: the attempts this agent was sent and has not reported, nor
        # lost by stopping or going offline: len(in_flight) <= max. The shared empty
        # frozenset until its first task (a set each is one more object per registration
        # for the collector to walk: at 100,000 agents the collections were ~40% of a
        # registration's CPU); `_start` makes the set, `_reassign` puts the empty one back.
        self.in_flight: set[tuple[str, int]] | frozenset[tuple[str, int]] = _NO_TASKS
        self.status = _IDLE
        self.status_seq = 1  # its REGISTERED event's
        self.health = _HEALTHY
        self.tracker: HealthTracker | None = None  # made when first needed (`Coordinator._tracker`)
        timeout, lag_degraded, beats = beat_class
        self.lag_degraded: float | None = lag_degraded  # heartbeat lag past which it is degraded
        self.blocked: str | None = None
        self.session: str | None = None
        self.offline = False
        self.removed = False  # deregistered: a late message about it finds it, but it is no one's
        self.registered_at = now
        self.last_heard = now
        self.timeout = timeout
        self.ema: float = 0.0
        # Invariant: the key of the ready bucket holding this agent (see `_bucket_key`), or
        # None when it has no credit or may not take work (offline, blocked, in a session,
        # unhealthy, removed). A new agent is healthy and idle: the registration puts it in
        # bucket 0.
        self.bucket: int | None = 0
        self.info: AgentInfo | None = None  # cached snapshot, None when stale
        # The heartbeat order it is in (its timeout's); the registration adds it there.
        self.beats: OrderedDict[_Agent, None] | None = beats
        self.text: str | None = None  # ``str(self.id)``, made by the first completion it reports (`_Done`)

    def snapshot(self) -> AgentInfo:
        info = self.info
        if info is None:
            d = self.descriptor
            info = self.info = AgentInfo(
                self.id,
                self.ref,
                self.caps,
                d.attributes,
                self.max,
                self.status,
                self.health,
                len(self.in_flight),
                self.status_seq,
                self.registered_at,
                self.last_heard,
                self.blocked,
                self.session,
            )
        return info


class _Task:
    """The coordinator's record of one submitted task."""

    __slots__ = (
        "agent",
        "attempt",
        "counters",
        "error",
        "finished_at",
        "future",
        "id",
        "idem",
        "queued_at",
        "result",
        "spec",
        "started_at",
        "state",
        "submitted_at",
    )

    def __init__(
        self,
        task_id: str,
        spec: TaskSpec,
        now: float,
        counters: _Counters,
        future: Future[Any],
    ) -> None:
        self.id = task_id
        # The counters of its set of required capabilities: resolved once per task, not
        # looked up on each of its ~6 counted events; one object, whatever the set holds
        # (the overall and per-capability figures are added up on `GetCoordinationStatistics`).
        self.counters = counters
        self.spec = spec
        self.idem = spec.idempotency_key or task_id
        self.future = future
        self.state = _QUEUED
        self.attempt = 0  # starts so far
        self.agent: _Agent | None = None
        self.submitted_at = now
        self.queued_at = now
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.result: Any = None
        self.error: BaseException | None = None


class Coordinator(Actor):
    """The registry, discovery and task assignment service (see the module docstring).

    Args:
        tick: seconds between heartbeat sweeps (default 1).
        heartbeat_timeout: seconds without news after which an agent is
            OFFLINE; None (default): twice the interval it registered with.
        health: the `HealthPolicy` applied to every agent.
        aging: seconds of waiting worth one priority level (default 60).
        result_writer: called as ``result_writer(result_key, value)`` for a
            completed task with a ``result_key``, on the coordinator's turn
            (e.g. ``lambda k, v: store.tell(SetEntry(k, v))``); its errors are logged.
        keep_finished: how many finished tasks `GetTask` (and idempotency keys)
            remember, the most recent; older ones are forgotten (10,000).
    """

    refusals: ClassVar[tuple[type[BaseException], ...]] = (TroupeError,)
    """A shared service: a told request it refuses is a ``REJECTED`` dead letter, not its failure (README)."""

    def __init__(
        self,
        *,
        tick: float = 1.0,
        heartbeat_timeout: float | None = None,
        health: HealthPolicy | None = None,
        aging: float = 60.0,
        result_writer: Callable[[str, Any], object] | None = None,
        keep_finished: int = 10_000,
    ) -> None:
        super().__init__()
        for name, value in (("tick", tick), ("aging", aging), ("heartbeat_timeout", heartbeat_timeout)):
            if value is not None and not (isinstance(value, int | float) and value > 0):
                msg = f"Coordinator {name} must be > 0 seconds, got {value!r}"
                raise TaskSpecError(msg)
        if health is not None and not isinstance(health, HealthPolicy):
            msg = f"Coordinator health must be a HealthPolicy or None, got {type(health).__name__} {health!r}"
            raise TypeError(msg)
        if result_writer is not None and not callable(result_writer):
            msg = f"Coordinator result_writer must be a callable (key, value) or None, got {result_writer!r}"
            raise TypeError(msg)
        check_count("keep_finished", keep_finished, owner="Coordinator")
        self._tick = float(tick)
        self._heartbeat_timeout = heartbeat_timeout
        self._health_policy = health or HealthPolicy()
        self._aging = float(aging)
        self._result_writer = result_writer
        clock = self.actor_system.clock
        # The real clock's `now` is `time.monotonic` itself (`MonotonicClock`): a C call a reading.
        self._now: Callable[[], float] = clock.now
        self._agents: dict[AgentId, _Agent] = {}
        # The indexes below hold the `_Agent` entries themselves: they hash by identity, in C
        # (an `AgentId` hashes in attrs' generated Python: ~20 hashes a task were ~7% of its CPU).
        self._by_cell: dict[object, _Agent] = {}
        self._by_cap: dict[str, set[_Agent]] = {}
        self._by_type: dict[str, set[_Agent]] = {}
        # One OrderedDict per heartbeat timeout, least recently heard first.
        self._beats: dict[float, OrderedDict[_Agent, None]] = {}
        # Per heartbeat interval registered with: (timeout, lag_degraded, that timeout's beats).
        self._beat_classes: dict[float, tuple[float, float, OrderedDict[_Agent, None]]] = {}
        # Ready buckets: `_bucket_key(health rank, in flight)` -> agents with credit, in
        # round-robin order. OrderedDicts: a plain dict used as a queue keeps the holes of
        # deleted entries at its front, and iterating from there costs O(holes) (22 µs a pick
        # at 1,000 agents).
        self._ready: dict[int, OrderedDict[_Agent, None]] = {}
        self._ready_keys: list[int] = []
        # Invariant: the unfinished tasks, and the finished ones not in _done, by id.
        self._tasks: dict[str, _Task] = {}
        # The common completion (first attempt, no idempotency key, timeouts, result key nor
        # audit) is remembered here instead of in _tasks: a tuple of strings, numbers and the
        # result, which the collector stops tracking (see `_Done`). A finished `_Task` kept for
        # `GetTask` was one more object per task for every collection to walk, 10,000 of them.
        self._done: dict[str, _Done] = {}
        # Invariant: the ids of the finished tasks still in _tasks or _done, oldest first, at
        # most keep_finished.
        self._finished: deque[str] = deque()
        self._keep_finished = max(0, keep_finished)
        self._by_idem: dict[str, _Task] = {}
        self._finished_specs: dict[str, TaskSpec] = {}  # by kind (`_let_go`)
        # Queued tasks per required-capability set, entries (rank, seq, task), lazy deletion:
        # a deque in rank order while the entries come in that order (the common case: one
        # priority, first attempts), a heap (a list) from the first that does not, until the
        # queue empties (`_enqueue`). A heappop was ~1 µs of a queued task's cost.
        self._queues: dict[frozenset[str], _Queue] = {}
        self._qseq = itertools.count()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._watchers: dict[object, pykka.ActorRef[Any]] = {}  # by cell (``ref.actor_inbox``)
        self._event_seq = 0
        # One `_Counters` per set of required capabilities (see `statistics.merged`).
        self._counter_sets: dict[frozenset[str], _Counters] = {}
        self._handlers: dict[type, Callable[[Any], Any]] = {
            Register: self._on_register,
            Deregister: self._on_deregister,
            FindAgents: self._on_find,
            GetAgent: self._on_get_agent,
            ListAgentTypes: self._on_list_types,
            ListCapabilities: self._on_list_caps,
            WatchRegistry: self._on_watch,
            UnwatchRegistry: self._on_unwatch,
            Submit: self._on_submit,
            CancelTask: self._on_cancel,
            GetTask: self._on_get_task,
            GetCoordinationStatistics: self._on_statistics,
            CheckHealth: self._on_check_health,
        }
        self._notifications: dict[type, Callable[[Any], None]] = {
            TaskFinished: self._on_finished,
            AgentHeartbeat: self._on_heartbeat,
            TaskProgress: self._on_progress,
            AgentDeclared: self._on_declared,
            Terminated: self._on_terminated,
            _Sweep: self._on_sweep,
            _TaskTimer: self._on_task_timer,
        }
        self._audit = self.actor_system.audit  # the system's channel: one for its life
        self._self_ref = self.actor_ref

    # -- actor hooks ---------------------------------------------------------------------

    def on_start(self) -> None:
        """Start the heartbeat sweep."""
        self.timers.start_periodic_timer("troupe-coordinator-sweep", _Sweep(), self._tick)

    def on_stop(self) -> None:
        """Fail every unfinished task's future with `CoordinationStoppedError`: no caller waits forever."""
        self._fail_unfinished()

    def on_failure(self, *_exc_info: object) -> None:
        """The coordinator itself failed (a bug of its own): its callers still get an answer."""
        self._fail_unfinished()

    def _fail_unfinished(self) -> None:
        for task in self._tasks.values():
            if task.state not in FINAL_STATES:
                error = CoordinationStoppedError(
                    f"{self} stopped before task {task.id} ({task.spec.kind!r}) finished; submit it again elsewhere"
                )
                task.future.set_exception((type(error), error, None))
                task.state = _FAILED  # answered: a second call leaves it alone

    def on_receive(self, message: Any) -> Any:
        """Answer a request (its errors reach the asker), or handle a notification (which never fails us)."""
        cls = message.__class__
        if cls is TaskFinished:  # the most frequent message: one per attempt, looked up first
            self._on_finished_batch(message)
            return None
        if cls is Submit:  # the next most frequent, a request: one per task
            if message.future is None:
                return self._on_submit(message)
            return self._on_submit_batch(message)
        handler = self._handlers.get(cls)
        if handler is not None:
            return handler(message)
        notify = self._notifications.get(cls)
        if notify is None:
            self._on_unknown(message)  # refused: an error to an asker, a REJECTED dead letter if told
            return None
        try:
            notify(message)
        except Exception as error:  # noqa: BLE001 - a bad notification must not stop the service
            self._dropped(message, error)
        return None

    def _on_finished_batch(self, message: TaskFinished) -> None:
        """Handle `message` and the `TaskFinished` told right behind it, in this one turn.

        Agents report in runs: with 1,000 agents the coordinator's mailbox was seen
        holding runs of 100-600 reports (the agents' turns run together while the
        submitter waits for the GIL), and a turn of the system's throughput (32
        messages) handled only 32 of them, so an ask queued behind waited for more
        turns, on another thread. Taken in the same turn, each costs no dispatch
        of its own. The take stops at anything else (a Submit, an ask), which gets
        its own turn as before, so the order holds. A bad report is dropped (logged,
        a dead letter) as a notification is, and the batch goes on.
        """
        try:
            self._on_finished(message)
        except Exception as error:  # noqa: BLE001 - a bad notification must not stop the service
            self._dropped(message, error)
        for told in self.take_queued_tells(TaskFinished, limit=_FINISHED_BATCH):
            try:
                self._on_finished(told)
            except Exception as error:  # noqa: BLE001 - as above
                self._dropped(told, error)

    def _dropped(self, message: Any, error: Exception) -> None:
        logger.opt(exception=True).warning("{}: dropped {!r}", self, message)
        self.actor_system.dead_letters.record(message, self.actor_ref, DeadLetterReason.HANDLER_FAILED, error)

    def _on_unknown(self, message: Any) -> None:
        msg = (
            f"{self} does not understand {message!r}; send a message of actors.coordination "
            "(Register, FindAgents, Submit, CancelTask, GetTask, GetCoordinationStatistics, ...)"
        )
        raise MessageNotUnderstoodError(msg)

    # -- registry ----------------------------------------------------------------------------

    def _on_register(self, message: Register) -> RegistrationResult:
        result = self._register(message, answer=True)
        # The registrations told right behind this one, in the same turn (issue 12: 100,000
        # agents registered in a burst). Each costs no turn of its own, no dispatch and no
        # answer nobody reads; the take stops at anything else (an ask, another message),
        # which gets its own turn as before, so the order holds. A refused one is what a
        # refused told request is (logged, a REJECTED dead letter), and the batch goes on.
        for told in self.take_queued_tells(Register, limit=_REGISTER_BATCH):
            try:
                self._register(told, answer=False)
            except TroupeError as error:
                logger.opt(exception=error).warning("{} rejected told message {!r}: {}", self, told, error)
                self.actor_system.dead_letters.record(told, self._self_ref, DeadLetterReason.REJECTED, error)
        return result  # type: ignore[return-value]

    def _register(self, message: Register, *, answer: bool) -> RegistrationResult | None:
        """Register the agent of `message`; return its `RegistrationResult` (None unless `answer`)."""
        ref, descriptor = message.ref, message.descriptor
        if not isinstance(descriptor, AgentDescriptor):
            msg = f"Register needs an AgentDescriptor, got {descriptor!r}"
            raise AgentRegistrationError(msg)
        aid = descriptor.id
        cell: object
        try:  # `_cell_of`, inlined (a registration's path is ~40 steps: each call shows)
            cell = ref.actor_inbox
        except AttributeError:
            cell = _cell_of(ref)  # raises its error
        holder = self._by_cell.get(cell)
        if holder is not None and holder.id != aid:
            msg = f"{ref} is already registered as {holder.id}; deregister it before registering it as {aid}"
            raise AgentRegistrationError(msg)
        replaced = False
        old = self._agents.get(aid)
        if old is not None and old.cell is cell:
            return RegistrationResult(aid, replaced=False, already_registered=True)
        try:  # `_watch_agent`, inlined: a ref that cannot be watched is refused before anything changes
            self.watch(ref)
        except TypeError:
            self._watch_agent(ref)  # raises its error
        if old is not None:
            logger.warning("{}: {} re-registered by {}; the stale entry of {} is replaced", self, aid, ref, old.ref)
            self._remove(old, why="replaced by a new registration")
            replaced = True
        interval = message.heartbeat_interval
        beat_class = self._beat_classes.get(interval)
        if beat_class is None:
            beat_class = self._beat_class(interval)
        now = self._now()
        agent = _Agent(ref, cell, descriptor, now, beat_class)
        self._agents[aid] = agent
        self._by_cell[cell] = agent
        by_cap = self._by_cap
        for cap in agent.caps:
            holders = by_cap.get(cap)
            if holders is None:
                by_cap[cap] = {agent}
            else:
                holders.add(agent)
        holders = self._by_type.get(aid.type)
        if holders is None:
            self._by_type[aid.type] = {agent}
        else:
            holders.add(agent)
        beat_class[2][agent] = None
        if self._watchers:
            self._emit(RegistryEventKind.REGISTERED, agent, StatusChange(aid, 1, None, _IDLE, now))
        audit = self._audit
        if audit.agent_activity:
            audit.emit("agent_activity", agent_event("registered", descriptor, replaced=replaced, status="idle"))
        # `_place`, inlined for the one case it has here: a new agent is healthy, idle and
        # has credit (max_concurrent_tasks >= 1), so it goes to the end of ready bucket 0.
        ready = self._ready.get(0)
        if ready is None:
            ready = self._ready[0] = OrderedDict()
            self._ready_keys = sorted(self._ready)
        ready[agent] = None  # agent.bucket is 0 already
        if self._queues:
            self._pull(agent)
        return RegistrationResult(aid, replaced) if answer else None

    def _beat_class(self, interval: float) -> tuple[float, float, OrderedDict[_Agent, None]]:
        """Return (and remember) what an agent beating every `interval` s registers with.

        Its heartbeat timeout, the lag past which it is degraded, and the beat
        order of the agents with that timeout.
        """
        timeout = float(self._heartbeat_timeout if self._heartbeat_timeout is not None else 2.0 * interval)
        lag = self._health_policy.lag_degraded
        beats = self._beats.get(timeout)
        if beats is None:
            beats = self._beats[timeout] = OrderedDict()
        found = self._beat_classes[interval] = (timeout, 1.5 * interval if lag is None else lag, beats)
        return found

    def _watch_agent(self, ref: pykka.ActorRef[Any]) -> None:
        try:
            self.watch(ref)
        except TypeError as error:
            msg = f"Register needs the ActorRef of a troupe actor (its death is watched), got {ref!r}: {error}"
            raise AgentRegistrationError(msg) from None

    def _on_deregister(self, message: Deregister) -> bool:
        agent = self._agents.get(message.agent)
        if agent is None:
            return False
        self._remove(agent, why="deregistered")
        return True

    def _on_terminated(self, message: Terminated) -> None:
        cell = _cell_of(message.ref)
        watcher = self._watchers.pop(cell, None)
        if watcher is not None:
            logger.debug("{}: registry watcher {} stopped; dropped", self, watcher)
        agent = self._by_cell.get(cell)
        if agent is not None:
            self._remove(agent, why=f"stopped ({message.reason!r})" if message.reason else "stopped")

    def _remove(self, agent: _Agent, *, why: str) -> None:
        """Take `agent` out of every index, reassign its attempts in flight, tell the watchers."""
        aid = agent.id
        del self._agents[aid]
        del self._by_cell[agent.cell]
        agent.removed = True
        for cap in agent.caps:
            holders = self._by_cap[cap]
            holders.discard(agent)
            if not holders:
                del self._by_cap[cap]
        holders = self._by_type[aid.type]
        holders.discard(agent)
        if not holders:
            del self._by_type[aid.type]
        if agent.beats is not None:
            agent.beats.pop(agent, None)
        self._unready(agent)
        if agent.cell not in self._watchers:
            with contextlib.suppress(TypeError):  # not a troupe ref: nothing was watched
                self.unwatch(agent.ref)
        old = agent.status
        agent.offline = True
        self._set_status(agent, _OFFLINE, emit=False)
        change = StatusChange(aid, agent.status_seq, old, _OFFLINE, self._now())
        if self._watchers and old is not _OFFLINE:
            self._emit(RegistryEventKind.DEREGISTERED, agent, change)
        elif self._watchers:
            self._emit(RegistryEventKind.DEREGISTERED, agent, None)
        audit = self._audit
        if audit.agent_activity:
            audit.emit("agent_activity", agent_event("deregistered", agent.descriptor, reason=why))
        self._reassign(agent, why)

    # -- discovery ----------------------------------------------------------------------------

    def _on_find(self, q: FindAgents) -> tuple[AgentInfo, ...]:
        candidates: Iterable[_Agent]
        if q.all_of:
            sets: list[set[_Agent]] = []
            for cap in q.all_of:
                holders = self._by_cap.get(cap)
                if not holders:
                    return ()
                sets.append(holders)
            smallest: set[_Agent] = min(sets, key=len)
            candidates = smallest
        elif q.types is not None:
            candidates = set().union(*(self._by_type.get(t, ()) for t in q.types))
        elif q.any_of:
            candidates = set().union(*(self._by_cap.get(c, ()) for c in q.any_of))
        else:
            candidates = self._agents.values()
        found = []
        for a in candidates:
            caps = a.caps
            if q.all_of and not q.all_of <= caps:
                continue
            if q.any_of and caps.isdisjoint(q.any_of):
                continue
            if q.none_of and not caps.isdisjoint(q.none_of):
                continue
            if q.types is not None and a.id.type not in q.types:
                continue
            if q.status is not None and a.status not in q.status:
                continue
            if q.health is not None and a.health not in q.health:
                continue
            if q.attributes:
                attributes = a.descriptor.attributes
                if any(attributes.get(k, _MISSING) != v for k, v in q.attributes.items()):
                    continue
            if q.where is not None and not q.where(a.descriptor.attributes):
                continue
            found.append(a)
        found.sort(key=_order)
        if q.limit is not None:
            found = found[: q.limit]
        return tuple(a.snapshot() for a in found)

    def _on_get_agent(self, message: GetAgent) -> AgentInfo | None:
        agent = self._agents.get(message.agent)
        return None if agent is None else agent.snapshot()

    def _on_list_types(self, _message: ListAgentTypes) -> FrozenDict[str, int]:
        return FrozenDict({t: len(ids) for t, ids in sorted(self._by_type.items())})

    def _on_list_caps(self, _message: ListCapabilities) -> FrozenDict[str, int]:
        return FrozenDict({c: len(ids) for c, ids in sorted(self._by_cap.items())})

    def _on_watch(self, message: WatchRegistry) -> int:
        ref = message.subscriber
        cell = _cell_of(ref)
        if cell not in self._watchers:
            self._watchers[cell] = ref
            if cell not in self._by_cell:
                self.watch(ref)
        snapshot = RegistrySnapshot(
            self._event_seq, tuple(a.snapshot() for a in sorted(self._agents.values(), key=_order))
        )
        try:
            ref.tell(snapshot)
        except pykka.ActorDeadError:
            self._watchers.pop(cell, None)
        return self._event_seq

    def _on_unwatch(self, message: UnwatchRegistry) -> bool:
        cell = _cell_of(message.subscriber)
        ref = self._watchers.pop(cell, None)
        if ref is None:
            return False
        if cell not in self._by_cell:
            with contextlib.suppress(TypeError):
                self.unwatch(ref)
        return True

    def _emit(self, kind: RegistryEventKind, agent: _Agent, change: StatusChange | None) -> None:
        self._event_seq += 1
        event = RegistryEvent(self._event_seq, kind, agent.snapshot(), change)
        dead = []
        for cell, ref in self._watchers.items():
            try:
                ref.tell(event)
            except pykka.ActorDeadError:
                dead.append(cell)
        for cell in dead:
            logger.debug("{}: registry watcher {} has stopped; dropped", self, self._watchers.pop(cell))

    # -- status, health, readiness ------------------------------------------------------------

    def _set_status(self, agent: _Agent, new: AgentStatus, *, emit: bool = True) -> None:
        old = agent.status
        if new is old:
            return
        # Idle, working and busy may always follow each other (the hot path: no enum hashing).
        if not (old in _FREE_MOVES and new in _FREE_MOVES) and not is_legal(old, new):
            msg = f"{self}: illegal status change of {agent.id}: {old} -> {new}"
            raise TroupeInternalError(msg)
        agent.status = new
        agent.status_seq += 1
        agent.info = None
        audit = self._audit
        if audit.agent_activity and emit:
            audit.emit(
                "agent_activity",
                agent_event(
                    "status_changed", agent.descriptor, old_status=str(old), status=str(new), seq=agent.status_seq
                ),
            )
        if emit and self._watchers:
            self._emit(RegistryEventKind.STATUS, agent, StatusChange(agent.id, agent.status_seq, old, new, self._now()))

    def _refresh(self, agent: _Agent) -> None:
        """Re-derive `agent`'s status and its place among the ready; call after any fact changed."""
        agent.info = None
        if agent.offline or agent.blocked is not None or agent.session is not None:
            self._refresh_declared(agent)
            return
        # The common case, inlined: derive_status's last three rules, then `_place`.
        n = len(agent.in_flight)
        new = _BUSY if n >= agent.max else _WORKING if n else _IDLE
        old = agent.status
        if new is not old:
            if old in _FREE_MOVES and not self._watchers and not self._audit.agent_activity:
                # `_set_status` with nothing to tell anyone: idle, working and busy may
                # always follow each other (twice a task: ~0.4 µs of its ~14 here).
                agent.status = new
                agent.status_seq += 1
            else:
                self._set_status(agent, new)
        offset = _BUCKET_OFFSET.get(agent.health)
        if offset is None or n >= agent.max or agent.removed:
            if agent.bucket is not None:
                self._unready(agent)
            return
        if agent.bucket != offset + n:
            self._ready_at(agent, offset + n)

    def _refresh_declared(self, agent: _Agent) -> None:
        """`_refresh` of an agent that is offline or declared itself blocked or in a session."""
        new = derive_status(
            offline=agent.offline,
            blocked=agent.blocked is not None,
            session=agent.session is not None,
            in_flight=len(agent.in_flight),
            max_concurrent=agent.max,
        )
        if agent.offline is False and agent.status is _OFFLINE and new in _DECLARED:
            # Back from offline: come back as idle/working/busy first (see status.LEGAL).
            self._set_status(
                agent,
                derive_status(
                    offline=False,
                    blocked=False,
                    session=False,
                    in_flight=len(agent.in_flight),
                    max_concurrent=agent.max,
                ),
            )
        self._set_status(agent, new)
        self._place(agent)

    def _place(self, agent: _Agent) -> None:
        offset = _BUCKET_OFFSET.get(agent.health)
        n = len(agent.in_flight)
        if (
            offset is None
            or agent.offline
            or agent.blocked is not None
            or agent.session is not None
            or n >= agent.max
            or agent.removed
        ):
            self._unready(agent)
            return
        if agent.bucket != offset + n:
            self._ready_at(agent, offset + n)

    def _ready_at(self, agent: _Agent, key: int) -> None:
        """Move `agent` to the end of ready bucket `key` (the end: that is the round robin)."""
        self._unready(agent)
        bucket = self._ready.get(key)
        if bucket is None:
            bucket = self._ready[key] = OrderedDict()
            self._ready_keys = sorted(self._ready)
        bucket[agent] = None
        agent.bucket = key

    def _unready(self, agent: _Agent) -> None:
        key = agent.bucket
        if key is None:
            return
        bucket = self._ready[key]
        del bucket[agent]
        if not bucket:
            del self._ready[key]
            self._ready_keys = sorted(self._ready)
        agent.bucket = None

    def _set_health(self, agent: _Agent, level: Health) -> None:
        if level is agent.health:
            return
        agent.health = level
        agent.info = None
        logger.info("{}: {} is now {}", self, agent.id, level)
        if self._watchers:
            self._emit(RegistryEventKind.HEALTH, agent, None)
        self._place(agent)

    def _heard(self, agent: _Agent, now: float) -> None:
        """Any message from an agent is a heartbeat."""
        agent.last_heard = now
        agent.info = None
        beats = agent.beats
        if beats is not None:
            try:
                beats.move_to_end(agent)
            except KeyError:  # it was offline: back in the beat order, as the most recent
                beats[agent] = None
        if agent.offline:
            agent.offline = False
            logger.info("{}: {} is heard from again", self, agent.id)
            self._refresh(agent)
            self._pull(agent)

    def _on_heartbeat(self, message: AgentHeartbeat) -> None:
        agent = self._agents.get(message.agent)
        if agent is None:
            return
        self._heard(agent, self._now())
        tracker = self._tracker(agent)
        tracker.mailbox_depth = message.mailbox_depth
        self._set_health(agent, tracker.evaluate(0.0))

    def _tracker(self, agent: _Agent) -> HealthTracker:
        tracker = agent.tracker
        if tracker is None:
            tracker = agent.tracker = HealthTracker(self._health_policy, lag_degraded=agent.lag_degraded)
        return tracker

    def _on_declared(self, message: AgentDeclared) -> None:
        agent = self._agents.get(message.agent)
        if agent is None:
            return
        self._heard(agent, self._now())
        agent.blocked = message.blocked
        agent.session = message.session
        self._refresh(agent)
        self._pull(agent)

    def _on_sweep(self, _message: _Sweep) -> None:
        now = self._now()
        for timeout, beats in self._beats.items():
            lagging = []
            for agent in beats:
                lag = now - agent.last_heard
                if lag >= timeout:
                    lagging.append((agent, True))
                elif lag >= (agent.lag_degraded or timeout):
                    lagging.append((agent, False))
                else:
                    break
            for agent, dead in lagging:
                if dead:
                    del beats[agent]
                    self._go_offline(agent, lag=now - agent.last_heard)
                else:
                    self._set_health(agent, self._tracker(agent).evaluate(now - agent.last_heard))

    def _go_offline(self, agent: _Agent, *, lag: float) -> None:
        logger.warning("{}: {} not heard from for {:.3g} s; offline, its tasks go elsewhere", self, agent.id, lag)
        agent.offline = True
        self._refresh(agent)
        self._reassign(agent, f"went offline (no heartbeat for {lag:.3g} s)")
        self._refresh(agent)

    # -- tasks ----------------------------------------------------------------------------------

    def _on_submit_batch(self, message: Submit) -> TaskHandle | None:
        """Handle `message` (with its own future) and the `Submit` told right behind it, in this one turn.

        `submit_task` callers tell in runs, as agents report (`_on_finished_batch`): each
        taken costs no dispatch of its own, and the take stops at anything else, so the
        order holds. One with its own future gets its errors there (`_on_submit`); one
        told without (its handle unread) is refused as a told request is: logged, a
        ``REJECTED`` dead letter, and the batch goes on.
        """
        handle = self._on_submit(message)
        for told in self.take_queued_tells(Submit, limit=_SUBMIT_BATCH):
            try:
                self._on_submit(told)
            except TroupeError as error:
                logger.opt(exception=error).warning("{} rejected told message {!r}: {}", self, told, error)
                self.actor_system.dead_letters.record(told, self._self_ref, DeadLetterReason.REJECTED, error)
            except Exception as error:  # noqa: BLE001 - taken from the mailbox: never lost with the rest of the batch
                self._dropped(told, error)
        return handle

    def _on_submit(self, message: Submit) -> TaskHandle | None:
        future = message.future
        if future is None:
            task = self._submit(message.spec, None, None)
            return _handle(task.id, task.future)
        try:  # told with its own future (submit_task): errors go there, never into the coordinator
            task = self._submit(message.spec, future, message.task_id)
        except Exception:  # noqa: BLE001 - handed to the caller's future
            future.set_exception()
            return None
        if task.future is not future:  # an idempotent repeat: the caller's future follows the first
            task.future.add_done_callback(lambda done: _copy_outcome(done, future))
        return TaskHandle(task.id, future)

    def _submit(self, spec: TaskSpec, future: Future[Any] | None, task_id: str | None) -> _Task:
        """Record and schedule a new task (or find the live one with the same idempotency key)."""
        if spec.__class__ is not TaskSpec and not isinstance(spec, TaskSpec):
            msg = f"Submit needs a TaskSpec, got {spec!r}"
            raise TaskSpecError(msg)
        key = spec.idempotency_key
        if key is not None:
            existing = self._by_idem.get(key)
            if existing is not None and existing.state not in (
                _FAILED,
                _TIMED_OUT,
                _CANCELLED,
            ):
                return existing
        if task_id is None:
            task_id = f"{self._prefix}-{next(self._ids)}"
        elif task_id in self._tasks or task_id in self._done:
            msg = f"{self} already has a task {task_id!r}; give every submission its own task_id"
            raise TaskSpecError(msg)
        now = self._now()
        requires = spec.requires
        counters = self._counter_sets.get(requires)
        if counters is None:
            counters = self._counter_sets[requires] = _Counters()
        task = _Task(task_id, spec, now, counters, Future() if future is None else future)
        self._tasks[task_id] = task
        if key is not None:
            self._by_idem[key] = task
        counters.submitted += 1
        audit = self._audit
        if audit.task_history:
            audit.emit("task_history", task_event("submitted", task_id, spec.kind))
        timeouts = spec.timeouts
        if timeouts is not NO_TIMEOUTS and timeouts.schedule_to_close is not None:
            self.timers.start_single_timer(
                ("s2close", task_id), _TaskTimer(task_id, 0, "schedule_to_close"), timeouts.schedule_to_close
            )
        # `_schedule`, inlined for a new task (QUEUED, queued at `now` already).
        agent = self._pick(requires) if self._ready else None
        if agent is not None:
            self._start(task, agent, now)
            return task
        queue = self._queues.get(requires)
        if queue is not None and queue.__class__ is deque and timeouts is NO_TIMEOUTS:
            # `_enqueue`, inlined for the common case: a queue in rank order, no timer to arm.
            entry = (now - spec.priority * self._aging, next(self._qseq), task)
            if entry > queue[-1]:  # entries compare by (rank, seq)
                queue.append(entry)
                counters.queued += 1
                return task
        self._enqueue(task)
        return task

    def _count(self, task: _Task, field: str, delta: int = 1) -> None:
        counters = task.counters
        setattr(counters, field, getattr(counters, field) + delta)

    def _schedule(self, task: _Task, now: float | None = None) -> None:
        """Give `task` (state QUEUED) to the best capable agent with credit, or queue it."""
        task.state = _QUEUED
        task.queued_at = now = self._now() if now is None else now
        agent = self._pick(task.spec.requires) if self._ready else None
        if agent is not None:
            self._start(task, agent, now)
        else:
            self._enqueue(task)

    def _enqueue(self, task: _Task) -> None:
        """Queue `task` (state QUEUED), which no capable agent with credit can take now."""
        # Invariant: a queued task has no capable agent with credit (agents pull when they get some).
        spec = task.spec
        requires = spec.requires
        # Ranked by `submitted_at - priority * aging`: a priority level is worth `aging` s of waiting.
        entry = (task.submitted_at - spec.priority * self._aging, next(self._qseq), task)
        queue = self._queues.get(requires)
        if queue is None:
            self._queues[requires] = deque((entry,))
        elif queue.__class__ is not deque:
            heapq.heappush(queue, entry)  # type: ignore[arg-type]  # a heap: a list
        elif entry > queue[-1]:
            queue.append(entry)  # still in rank order
        else:  # out of order (a retry, a higher priority): a sorted list is a heap already
            heap = self._queues[requires] = list(queue)
            heapq.heappush(heap, entry)
        task.counters.queued += 1
        timeouts = spec.timeouts
        if timeouts is not NO_TIMEOUTS and timeouts.schedule_to_start is not None:
            self.timers.start_single_timer(
                ("s2start", task.id), _TaskTimer(task.id, task.attempt, "schedule_to_start"), timeouts.schedule_to_start
            )

    def _pick(self, requires: frozenset[str]) -> _Agent | None:
        """Return the best agent with credit holding `requires`, or None."""
        smallest: set[_Agent] | None = None
        if requires:
            for cap in requires:
                holders = self._by_cap.get(cap)
                if not holders:
                    return None
                if smallest is None or len(holders) < len(smallest):
                    smallest = holders
            if smallest is not None and len(smallest) <= _SMALL_INDEX:
                best: _Agent | None = None
                best_key: tuple[int, float] | None = None
                for a in smallest:
                    if a.bucket is None or not requires <= a.caps:
                        continue
                    key = (a.bucket, a.ema)
                    if best_key is None or key < best_key:
                        best, best_key = a, key
                return best
        ready = self._ready
        if smallest is None or len(smallest) == len(self._agents):
            # Every registered agent holds `requires` (the smallest index set holds them all),
            # so every ready one is capable: no subset test, and the least loaded level (a
            # bucket is never empty: `_unready` drops it) decides. The common case, once a
            # task: 6.7k instructions a pick instead of 11.3k (callgrind, 1,000 agents).
            keys = self._ready_keys
            if not keys:
                return None
            best = None
            best_ema = 0.0
            for a in islice(ready[keys[0]], _RANK_SCAN):
                ema = a.ema
                if best is None or ema < best_ema:  # the first lowest, as below
                    best, best_ema = a, ema
            return best
        for level in self._ready_keys:
            best = None
            seen = 0
            for a in ready[level]:
                if requires and not requires <= a.caps:
                    continue
                if best is None or a.ema < best.ema:
                    best = a
                seen += 1
                if seen >= _RANK_SCAN:
                    break
            if best is not None:
                return best
        return None

    def _start(self, task: _Task, agent: _Agent, now: float) -> None:
        """Send `task`'s next attempt to `agent`, which takes work now (it was ready, or `_pull` checked it)."""
        task.state = _RUNNING
        attempt = task.attempt + 1
        task.attempt = attempt
        task.agent = agent
        task.started_at = now
        task_id = task.id
        in_flight = agent.in_flight
        if in_flight is _NO_TASKS:
            agent.in_flight = in_flight = {(task_id, attempt)}
        else:
            in_flight.add((task_id, attempt))  # type: ignore[union-attr]  # a set once it is not _NO_TASKS
        counters = task.counters
        counters.running += 1
        counters.wait_times.append(now - task.queued_at)
        spec = task.spec
        timeouts = spec.timeouts
        if timeouts is not NO_TIMEOUTS:  # the default: no timer to touch
            timers = self.timers
            if timeouts.schedule_to_start is not None:
                timers.cancel(("s2start", task_id))
            if timeouts.start_to_close is not None:
                timers.start_single_timer(
                    ("s2c", task_id), _TaskTimer(task_id, attempt, "start_to_close"), timeouts.start_to_close
                )
            if timeouts.heartbeat is not None:
                timers.start_single_timer(
                    ("hb", task_id), _TaskTimer(task_id, attempt, "heartbeat"), timeouts.heartbeat
                )
        audit = self._audit
        if audit.task_history:
            audit.emit("task_history", task_event("assigned", task_id, spec.kind, agent=agent.id, attempt=attempt))
        # `_refresh`, inlined for an agent that takes work (not offline, declared nor removed;
        # healthy or degraded): its status and its place among the ready.
        agent.info = None
        n = len(in_flight)
        full = n >= agent.max
        new = _BUSY if full else _WORKING
        old = agent.status
        if new is not old:
            if old in _FREE_MOVES and not self._watchers and not audit.agent_activity:
                agent.status = new  # `_set_status` with nothing to tell anyone
                agent.status_seq += 1
            else:
                self._set_status(agent, new)
        if full:
            key = agent.bucket
            if key is not None:  # `_unready`, inlined: once a task at 1,000 agents of one slot each
                bucket = self._ready[key]
                del bucket[agent]
                if not bucket:
                    del self._ready[key]
                    self._ready_keys = sorted(self._ready)
                agent.bucket = None
        else:
            key = _BUCKET_OFFSET[agent.health] + n
            if agent.bucket != key:
                self._ready_at(agent, key)
        try:  # noqa: SIM105 - contextlib.suppress is ~0.5 µs a task
            agent.ref.tell(_run_task(task_id, spec.kind, spec.payload, attempt, task.idem, self._self_ref))
        except pykka.ActorDeadError:
            pass  # its Terminated is on the way: the attempt is reassigned then

    def _pull(self, agent: _Agent, now: float | None = None) -> bool:
        """Let `agent` take the best queued tasks it can run, while it may take work and has credit.

        Return whether it took one (its status was re-derived then). Runs before the
        agent's status is re-derived after a slot came back, so an agent that goes from
        one task straight to the next stays BUSY (no IDLE in between).
        """
        queues = self._queues
        took = False
        # `_takes_work(agent)`, inlined: the first check, then credit after each start
        if not (
            not agent.offline
            and agent.blocked is None
            and agent.session is None
            and agent.health in _BUCKET_OFFSET
            and not agent.removed
        ):
            return False
        caps = agent.caps
        while queues and len(agent.in_flight) < agent.max:
            best: _Queue | None = None
            empty = None
            for requires, queue in queues.items():
                while queue and queue[0][2].state is not _QUEUED:
                    _pop(queue)  # cancelled or timed out while queued
                if not queue:
                    if empty is None:
                        empty = [requires]
                    else:
                        empty.append(requires)
                elif requires <= caps and (best is None or queue[0] < best[0]):
                    best = queue  # heads compare as (rank, seq): seq is unique, the task never compared
            if empty is not None:
                for requires in empty:
                    del queues[requires]
            if best is None:
                break
            # `_pop`, inlined: one call fewer per queued task
            task = (best.popleft() if best.__class__ is deque else heapq.heappop(best))[2]  # type: ignore[arg-type]
            if not best:
                del queues[task.spec.requires]
            task.counters.queued -= 1
            if now is None:
                now = self._now()
            self._start(task, agent, now)
            took = True  # `_start` changes none of the facts checked above, only the credit
        return took

    def _on_finished(self, message: TaskFinished) -> None:
        task = self._tasks.get(message.task_id)
        agent = None if task is None else task.agent
        if agent is None or agent.removed or (agent.id is not message.agent and agent.id != message.agent):
            agent = self._agents.get(message.agent)
            if agent is None:
                return  # not (or no longer) registered: it holds no slot here
        now = self._now()
        if agent.offline:
            self._heard(agent, now)
        else:  # `_heard`, inlined: this runs once per task
            agent.last_heard = now
            beats = agent.beats
            if beats is not None:
                try:
                    beats.move_to_end(agent)
                except KeyError:
                    beats[agent] = None
        agent.info = None
        attempt = message.attempt
        if task is not None and task.agent is agent and task.attempt == attempt and task.state is _RUNNING:
            run_time = message.run_time
            error = message.error
            tracker = agent.tracker
            if tracker is None:
                tracker = self._tracker(agent)
            level = tracker.succeeded(run_time) if error is None else tracker.outcome(ok=False, run_time=run_time)
            if level is not agent.health:
                self._set_health(agent, level)
            ema = agent.ema
            agent.ema = run_time if ema == 0.0 else ema + _EMA_ALPHA * (run_time - ema)
            if error is None:
                counters = task.counters  # `_end_attempt`'s count, the run time, and the completion
                counters.running -= 1
                counters.completed += 1
                counters.run_times.append(run_time)
                spec = task.spec
                if (
                    spec.timeouts is NO_TIMEOUTS
                    and attempt == 1
                    and spec.result_key is None
                    and spec.idempotency_key is None
                    and not self._audit.task_history
                ):
                    # `_finish`, inlined for the common completion: no timer, no retry timer
                    # (a first attempt), no result to copy, nothing to audit, no key to
                    # remember it by; remembered as a `_Done` and the record let go.
                    task_id = task.id
                    task.state = _COMPLETED
                    value = message.value
                    text = agent.text
                    if text is None:
                        aid = agent.id
                        text = agent.text = f"{aid.type}/{aid.key}"
                    del self._tasks[task_id]
                    self._done[task_id] = (spec.kind, text, task.submitted_at, task.started_at, now, value)
                    finished = self._finished
                    finished.append(task_id)
                    if len(finished) > self._keep_finished:
                        old = finished.popleft()  # `_forget_finished`'s one step: one over
                        if self._done.pop(old, None) is None:
                            self._forget(old)
                    task.future.set(value)
                else:
                    if spec.timeouts is not NO_TIMEOUTS:
                        self._stop_attempt_timers(task)
                    self._finish(task, _COMPLETED, value=message.value, now=now)
            else:
                self._end_attempt(task)
                self._attempt_failed(task, error)
        # The attempt's slot comes back: the agent pulls queued work, then its status is
        # re-derived (by `_start` if it took a task: one task straight to the next).
        key = (message.task_id, attempt)
        in_flight = agent.in_flight
        if key not in in_flight:
            return
        in_flight.remove(key)  # type: ignore[union-attr]  # holds key: a set
        if agent.removed or (self._queues and self._pull(agent, now)):
            return
        if agent.offline or agent.blocked is not None or agent.session is not None:
            self._refresh(agent)
            return
        # `_refresh`, inlined for an agent that is reachable and undeclared.
        n = len(in_flight)
        new = _BUSY if n >= agent.max else _WORKING if n else _IDLE
        old = agent.status
        if new is not old:
            if old in _FREE_MOVES and not self._watchers and not self._audit.agent_activity:
                agent.status = new  # `_set_status` with nothing to tell anyone
                agent.status_seq += 1
            else:
                self._set_status(agent, new)
        offset = _BUCKET_OFFSET.get(agent.health)
        if offset is None or n >= agent.max:
            if agent.bucket is not None:
                self._unready(agent)
            return
        place = offset + n
        if agent.bucket is None:  # `_ready_at`, inlined for an agent back from no credit (the common case)
            bucket = self._ready.get(place)
            if bucket is None:
                bucket = self._ready[place] = OrderedDict()
                self._ready_keys = sorted(self._ready)
            bucket[agent] = None
            agent.bucket = place
        elif agent.bucket != place:
            self._ready_at(agent, place)

    def _end_attempt(self, task: _Task) -> None:
        """The running attempt is over (for whatever reason): stop its timers and counters."""
        task.counters.running -= 1
        if task.spec.timeouts is not NO_TIMEOUTS:
            self._stop_attempt_timers(task)

    def _stop_attempt_timers(self, task: _Task) -> None:
        timeouts = task.spec.timeouts
        if timeouts.start_to_close is not None:
            self.timers.cancel(("s2c", task.id))
        if timeouts.heartbeat is not None:
            self.timers.cancel(("hb", task.id))

    def _attempt_failed(self, task: _Task, error: BaseException) -> None:
        if task.spec.retry.should_retry(error, task.attempt):
            task.state = _BACKOFF
            task.agent = None
            self._count(task, "retries")
            delay = task.spec.retry.delay(task.attempt)
            audit = self._audit
            if audit.task_history:
                audit.emit(
                    "task_history", task_event("retrying", task.id, task.spec.kind, attempt=task.attempt, error=error)
                )
            logger.debug(
                "{}: task {} attempt {} failed ({!r}); retry in {} s", self, task.id, task.attempt, error, delay
            )
            self.timers.start_single_timer(("retry", task.id), _TaskTimer(task.id, task.attempt, "retry"), delay)
        elif isinstance(error, TaskTimeoutError):
            self._finish(task, _TIMED_OUT, error=error)
        else:
            self._finish(task, _FAILED, error=error)

    def _finish(
        self,
        task: _Task,
        state: TaskState,
        *,
        value: Any = None,
        error: BaseException | None = None,
        now: float | None = None,
    ) -> None:
        finished = self._finished
        finished.append(task.id)
        if len(finished) > self._keep_finished:
            self._forget_finished()
        task.state = state
        task.finished_at = self._now() if now is None else now
        task.result = value
        task.error = error
        if state is not _COMPLETED:  # a completion is counted by `_on_finished`, its one caller
            self._count(task, state.value)  # the counters are named for the final states
        audit = self._audit
        if audit.task_history:
            started = task.started_at
            audit.emit(
                "task_history",
                task_event(
                    state.value,
                    task.id,
                    task.spec.kind,
                    agent=None if task.agent is None else task.agent.id,
                    attempt=task.attempt,
                    duration_ms=None if started is None else (task.finished_at - started) * 1000.0,
                    error=error,
                ),
            )
        spec = task.spec
        timeouts = spec.timeouts
        if timeouts is not NO_TIMEOUTS:
            if timeouts.schedule_to_close is not None:
                self.timers.cancel(("s2close", task.id))
            if timeouts.schedule_to_start is not None:
                self.timers.cancel(("s2start", task.id))
        if task.attempt > 1 or state is _CANCELLED:
            self.timers.cancel(("retry", task.id))  # only a task that failed an attempt can have one
        if error is None:
            task.future.set(value)
            key = spec.result_key
            if key is not None and self._result_writer is not None:
                try:
                    self._result_writer(key, value)
                except Exception:  # noqa: BLE001 - the result is delivered; the copy failed
                    logger.opt(exception=True).error("{}: writing the result of {} to {!r} failed", self, task.id, key)
        else:
            task.future.set_exception((type(error), error, error.__traceback__))
        if spec.idempotency_key is None:
            self._let_go(task)

    def _let_go(self, task: _Task) -> None:
        """Drop what a finished task without an idempotency key holds that nobody reads again.

        Its future (the caller holds it; only a repeat of a key would read it) and its
        spec (`GetTask` reads only the kind; a spec of that kind is shared instead), so
        the payload goes too. Kept, they were 2 of the 3 tracked objects per remembered
        task (`keep_finished`, 10,000 by default) that the collector walks in each full
        collection while the record fills.
        """
        task.future = _SETTLED
        kind = task.spec.kind
        spec = self._finished_specs.get(kind)
        if spec is None:
            if len(self._finished_specs) >= _FINISHED_KINDS:
                return  # many kinds: keep this task's own spec
            spec = self._finished_specs[kind] = TaskSpec(kind)
        task.spec = spec

    def _forget_finished(self) -> None:
        """Forget the oldest finished tasks beyond `keep_finished` (their ids and idempotency keys)."""
        finished, done = self._finished, self._done
        while len(finished) > self._keep_finished:
            task_id = finished.popleft()
            if done.pop(task_id, None) is None:
                self._forget(task_id)

    def _forget(self, task_id: str) -> None:
        """Forget the finished task `task_id` of `_tasks`, and its idempotency key."""
        old = self._tasks.pop(task_id)
        key = old.spec.idempotency_key
        if key is not None and self._by_idem.get(key) is old:
            del self._by_idem[key]

    def _reassign(self, agent: _Agent, why: str) -> None:
        """The attempts in flight on `agent` are lost: start them again elsewhere (at least once)."""
        lost = sorted(agent.in_flight)
        agent.in_flight = _NO_TASKS
        agent.info = None
        for task_id, attempt in lost:
            task = self._tasks.get(task_id)
            if task is None or task.state is not _RUNNING or task.attempt != attempt or task.agent is not agent:
                continue
            self._end_attempt(task)
            task.agent = None
            if task.spec.retry.should_retry(None, task.attempt):
                self._count(task, "reassignments")
                logger.info("{}: task {} attempt {} reassigned: {} {}", self, task.id, attempt, agent.id, why)
                self._schedule(task)
            else:
                error = pykka.ActorDeadError(
                    f"task {task.id} ({task.spec.kind!r}) was lost: agent {agent.id} {why} during attempt {attempt}, "
                    f"its last of {task.spec.retry.max_attempts}"
                )
                self._finish(task, _FAILED, error=error)

    def _on_progress(self, message: TaskProgress) -> None:
        agent = self._agents.get(message.agent)
        if agent is not None:
            self._heard(agent, self._now())
        task = self._tasks.get(message.task_id)
        if (
            task is not None
            and task.state is _RUNNING
            and task.attempt == message.attempt
            and task.spec.timeouts.heartbeat is not None
        ):
            self.timers.start_single_timer(
                ("hb", task.id), _TaskTimer(task.id, task.attempt, "heartbeat"), task.spec.timeouts.heartbeat
            )

    def _on_task_timer(self, message: _TaskTimer) -> None:
        task = self._tasks.get(message.task_id)
        if task is None or task.state in FINAL_STATES:
            return
        which = message.which
        if which == "retry":
            if task.state is _BACKOFF and task.attempt == message.attempt:
                self._schedule(task)
            return
        if which == "schedule_to_close":
            error = TaskTimeoutError(
                f"task {task.id} ({task.spec.kind!r}) did not finish within its schedule_to_close timeout of "
                f"{task.spec.timeouts.schedule_to_close} s ({task.attempt} attempts); "
                "raise the timeout or find why it is slow",
                timeout=which,
                task_id=task.id,
            )
            self._abort(task, _TIMED_OUT, error)
            return
        if which == "schedule_to_start":
            if task.state is _QUEUED and task.attempt == message.attempt:
                self._abort(task, _TIMED_OUT, self._no_agent_error(task))
            return
        if task.state is not _RUNNING or task.attempt != message.attempt:
            return
        limit = task.spec.timeouts.start_to_close if which == "start_to_close" else task.spec.timeouts.heartbeat
        agent = task.agent
        error = TaskTimeoutError(
            f"task {task.id} ({task.spec.kind!r}) attempt {task.attempt} on {agent.id if agent else '?'} "
            + (
                f"did not finish within its start_to_close timeout of {limit} s"
                if which == "start_to_close"
                else f"reported no progress within its heartbeat timeout of {limit} s (call report_progress)"
            ),
            timeout=which,
            task_id=task.id,
        )
        self._end_attempt(task)
        self._cancel_run(task)
        self._attempt_failed(task, error)

    def _cancel_run(self, task: _Task) -> None:
        """Tell the agent running `task` to drop the attempt; its slot comes back when it reports."""
        agent = task.agent
        if agent is None:
            return
        with contextlib.suppress(pykka.ActorDeadError):
            agent.ref.tell(CancelRun(task.id, task.attempt))
        task.agent = None

    def _abort(self, task: _Task, state: TaskState, error: BaseException) -> None:
        """End `task` now, whatever it is doing."""
        if task.state is _QUEUED:
            self._count(task, "queued", -1)  # its heap entry is skipped lazily
        elif task.state is _RUNNING:
            self._end_attempt(task)
            self._cancel_run(task)
        self._finish(task, state, error=error)

    def _no_agent_error(self, task: _Task) -> TaskTimeoutError:
        requires = task.spec.requires
        missing = sorted(c for c in requires if not self._by_cap.get(c))
        capable = [a for a in self._agents.values() if requires <= a.caps]
        shown = ", ".join(f"{a.id} ({a.status}, {a.health})" for a in sorted(capable, key=lambda a: a.id)[:10])
        if missing:
            why = f"no registered agent has {missing}"
        elif capable:
            why = f"the {len(capable)} capable agents stayed busy or unavailable: {shown}"
        else:
            why = "no registered agent holds all of them together"
        msg = (
            f"task {task.id} ({task.spec.kind!r}, requires {sorted(requires)}) was not started within its "
            f"schedule_to_start timeout of {task.spec.timeouts.schedule_to_start} s: {why}; "
            f"{len(self._agents)} agents registered, of types {sorted(self._by_type)}. "
            "Register an agent with these capabilities, or raise the timeout"
        )
        return TaskTimeoutError(msg, timeout="schedule_to_start", task_id=task.id)

    def _on_cancel(self, message: CancelTask) -> bool:
        if message.task_id in self._done:
            return False
        task = self._task(message.task_id)
        if task.state in FINAL_STATES:
            return False
        error = TaskCancelledError(f"task {task.id} ({task.spec.kind!r}) was cancelled in state {task.state}")
        self._abort(task, _CANCELLED, error)
        return True

    def _task(self, task_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            msg = f"{self} has no task {task_id!r}; use the task_id of a TaskHandle it returned"
            raise UnknownTaskError(msg)
        return task

    def _on_get_task(self, message: GetTask) -> TaskInfo:
        done = self._done.get(message.task_id)
        if done is not None:
            kind, agent, submitted_at, started_at, finished_at, result = done
            return TaskInfo(
                message.task_id,
                kind,
                _COMPLETED,
                1,
                AgentId.parse(agent),
                submitted_at,
                started_at,
                finished_at,
                result,
                None,
            )
        t = self._task(message.task_id)
        return TaskInfo(
            t.id,
            t.spec.kind,
            t.state,
            t.attempt,
            t.agent.id if t.agent is not None else None,
            t.submitted_at,
            t.started_at,
            t.finished_at,
            t.result,
            t.error,
        )

    def _on_check_health(self, _message: CheckHealth) -> HealthReport:
        """Answer a health check: healthy while it serves; ``queue_depth`` (tasks waiting) and more to judge."""
        sets = self._counter_sets.values()
        queued, running = sum(c.queued for c in sets), sum(c.running for c in sets)
        unhealthy = sum(1 for a in self._agents.values() if a.health is Health.UNHEALTHY)
        return HealthReport(
            HealthStatus.HEALTHY,
            f"{queued} tasks queued, {running} running, {len(self._agents)} agents",
            {
                "queue_depth": queued,
                "running": running,
                "agents": len(self._agents),
                "agents_unhealthy": unhealthy,
            },
        )

    def _on_statistics(self, _message: GetCoordinationStatistics) -> CoordinationStatistics:
        # Counted by member, named once per member: str() of an enum member is ~1 µs, and
        # this runs over every agent (0.1 s at 100,000 agents with two str() each).
        sets = self._counter_sets
        capabilities = sorted({cap for requires in sets for cap in requires})
        by_status: dict[AgentStatus, int] = {}
        by_health: dict[Health, int] = {}
        for a in self._agents.values():
            status, health = a.status, a.health
            by_status[status] = by_status.get(status, 0) + 1
            by_health[health] = by_health.get(health, 0) + 1
        return CoordinationStatistics(
            agents=len(self._agents),
            by_status=FrozenDict(sorted((str(k), n) for k, n in by_status.items())),
            by_health=FrozenDict(sorted((str(k), n) for k, n in by_health.items())),
            tasks=merged(tuple(sets.values())),
            per_capability=FrozenDict(
                {cap: merged([c for requires, c in sets.items() if cap in requires]) for cap in capabilities}
            ),
            watchers=len(self._watchers),
        )


_MISSING = object()

_FINISHED_KINDS = 1024
"""How many kinds of task `Coordinator._let_go` shares a spec for (past that, a finished task keeps its own)."""

_SETTLED: Future[Any] = Future()
_SETTLED.set(None)
"""The future a finished task without an idempotency key keeps instead of its own (see `_finish`)."""

_Done: TypeAlias = tuple[str, str, float, float | None, float, Any]
"""A task of `Coordinator._done`: (kind, agent id as ``type/key``, submitted_at, started_at, finished_at, result).

Completed on its first attempt, so its state and attempt go without saying. Strings and
floats only, besides the result: the collector untracks such a tuple at its first pass
(unless the result is a container), so the 10,000 remembered cost no collection anything.
"""

_Queue: TypeAlias = deque[tuple[float, int, _Task]] | list[tuple[float, int, _Task]]
"""A queue of `Coordinator._queues`: a deque in rank order, or a heap."""


def _pop(queue: _Queue) -> tuple[float, int, _Task]:
    """Take the head (the lowest rank) of `queue`."""
    if queue.__class__ is deque:
        return queue.popleft()
    return heapq.heappop(queue)  # type: ignore[arg-type]  # a heap: a list


_client_prefix = uuid.uuid4().hex[:8]
_client_ids = itertools.count(1)  # next() on a count is atomic under the GIL: any thread may call it


def submit_task(coordinator: pykka.ActorRef[Any], spec: TaskSpec) -> TaskHandle:
    """Submit `spec` without waiting for the coordinator's turn; return its `TaskHandle` at once.

    The handle's future and task id are made here and travel in a told
    `Submit`: a busy coordinator costs the caller nothing, and a bad
    submission (or a stopped coordinator) fails the future. Any thread may call it.
    """
    future: Future[Any] = Future()
    task_id = f"c{_client_prefix}-{next(_client_ids)}"
    try:
        coordinator.tell(Submit(spec, future, task_id))
    except pykka.ActorDeadError:
        future.set_exception()
    return TaskHandle(task_id, future)


def _copy_outcome(done: Future[Any], into: Future[Any]) -> None:
    try:
        value = done.get(timeout=0)
    except BaseException:  # noqa: BLE001 - copied, not handled
        into.set_exception()
    else:
        into.set(value)


def _order(agent: _Agent) -> tuple[str, str]:
    """Sort key: the id's order, ~10x faster than attrs' generated __lt__."""
    aid = agent.id
    return (aid.type, aid.key)


def _cell_of(ref: Any) -> object:
    """The key of `ref`'s actor: its inbox (a troupe ref's cell, the same for every ref to it and every incarnation)."""
    try:
        return ref.actor_inbox
    except AttributeError:
        msg = f"expected an ActorRef of a troupe actor, got {ref!r}"
        raise AgentRegistrationError(msg) from None
