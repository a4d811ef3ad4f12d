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
best queued task it can run. A task nobody can take now waits in a queue per
set of required capabilities, ordered by ``submitted_at - priority * aging``
(so a priority level is worth `aging` seconds of waiting and nothing
starves), and is never dropped: it waits until a capable agent has credit, or
its schedule-to-start timeout fails it with an error naming the missing
capabilities. Timeouts and retries are timer messages on the system clock.

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
from typing import Any, ClassVar

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
    RunTask,
    Submit,
    TaskFinished,
    TaskProgress,
    UnwatchRegistry,
    WatchRegistry,
)
from actors.coordination.statistics import CoordinationStatistics, _Counters
from actors.coordination.status import AgentStatus, StatusChange, derive_status, is_legal
from actors.coordination.tasks import FINAL_STATES, Task, TaskHandle, TaskInfo, TaskSpec, TaskState
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

_EMA_ALPHA = 0.2
_RANK_SCAN = 8  # capable agents compared by run time within one load level
_SMALL_INDEX = 32  # below this many agents, rank a capability's index set exactly
_STATUS_RANK = {Health.HEALTHY: 0, Health.DEGRADED: 1}


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
        "descriptor",
        "ema",
        "health",
        "id",
        "in_flight",
        "info",
        "last_heard",
        "max",
        "offline",
        "order",
        "ref",
        "registered_at",
        "session",
        "status",
        "status_seq",
        "timeout",
        "tracker",
        "urn",
    )

    def __init__(self, ref: pykka.ActorRef[Any], descriptor: AgentDescriptor, now: float, timeout: float) -> None:
        self.ref = ref
        self.urn = ref.actor_urn
        self.descriptor = descriptor
        self.id = descriptor.id
        self.order = (self.id.type, self.id.key)  # sorts like the id, ~10x faster than attrs' __lt__
        self.caps = descriptor.capabilities
        self.max = descriptor.max_concurrent_tasks
        # Invariant: the attempts this agent was sent and has not reported, nor
        # lost by stopping or going offline: len(in_flight) <= max.
        self.in_flight: set[tuple[str, int]] = set()
        self.status = AgentStatus.IDLE
        self.status_seq = 0
        self.health = Health.HEALTHY
        self.tracker: HealthTracker | None = None
        self.blocked: str | None = None
        self.session: str | None = None
        self.offline = False
        self.registered_at = now
        self.last_heard = now
        self.timeout = timeout
        self.ema: float = 0.0
        # Invariant: the ready bucket holding this agent, or None when it has no
        # credit or may not take work (offline, blocked, in a session, unhealthy).
        self.bucket: tuple[int, int] | None = None
        self.info: AgentInfo | None = None  # cached snapshot, None when stale
        self.beats: OrderedDict[AgentId, _Agent] | None = None

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
        "error",
        "finished_at",
        "future",
        "id",
        "idem",
        "queued_at",
        "rank",
        "result",
        "spec",
        "started_at",
        "state",
        "submitted_at",
    )

    def __init__(self, task_id: str, spec: TaskSpec, now: float, aging: float) -> None:
        self.id = task_id
        self.spec = spec
        self.idem = spec.idempotency_key or task_id
        self.future: Future[Any] = Future()
        self.state = TaskState.QUEUED
        self.attempt = 0  # starts so far
        self.agent: _Agent | None = None
        self.submitted_at = now
        self.queued_at = now
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.rank = now - spec.priority * aging


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
        self._clock = self.actor_system.clock
        self._agents: dict[AgentId, _Agent] = {}
        self._by_urn: dict[str, _Agent] = {}
        self._by_cap: dict[str, set[AgentId]] = {}
        self._by_type: dict[str, set[AgentId]] = {}
        # One OrderedDict per heartbeat timeout, least recently heard first.
        self._beats: dict[float, OrderedDict[AgentId, _Agent]] = {}
        # Ready buckets: (health rank, in flight) -> agents with credit, in round-robin order.
        # OrderedDicts: a plain dict used as a queue keeps the holes of deleted entries at its
        # front, and iterating from there costs O(holes) (22 µs a pick at 1,000 agents).
        self._ready: dict[tuple[int, int], OrderedDict[AgentId, _Agent]] = {}
        self._ready_keys: list[tuple[int, int]] = []
        self._tasks: dict[str, _Task] = {}
        # Invariant: the finished tasks still in _tasks, oldest first, at most keep_finished.
        self._finished: deque[_Task] = deque()
        self._keep_finished = max(0, keep_finished)
        self._by_idem: dict[str, _Task] = {}
        # Queued tasks per required-capability set: heaps of (rank, seq, task); lazy deletion.
        self._queues: dict[frozenset[str], list[tuple[float, int, _Task]]] = {}
        self._qseq = itertools.count()
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._watchers: dict[str, pykka.ActorRef[Any]] = {}
        self._event_seq = 0
        self._overall = _Counters()
        self._per_cap: dict[str, _Counters] = {}
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
                task.state = TaskState.FAILED  # answered: a second call leaves it alone

    def on_receive(self, message: Any) -> Any:
        """Answer a request (its errors reach the asker), or handle a notification (which never fails us)."""
        handler = self._handlers.get(message.__class__)
        if handler is not None:
            return handler(message)
        notify = self._notifications.get(message.__class__)
        if notify is None:
            self._on_unknown(message)  # refused: an error to an asker, a REJECTED dead letter if told
            return None
        try:
            notify(message)
        except Exception as error:  # noqa: BLE001 - a bad notification must not stop the service
            logger.opt(exception=True).warning("{}: dropped {!r}", self, message)
            self.actor_system.dead_letters.record(message, self.actor_ref, DeadLetterReason.HANDLER_FAILED, error)
        return None

    def _on_unknown(self, message: Any) -> None:
        msg = (
            f"{self} does not understand {message!r}; send a message of actors.coordination "
            "(Register, FindAgents, Submit, CancelTask, GetTask, GetCoordinationStatistics, ...)"
        )
        raise MessageNotUnderstoodError(msg)

    # -- registry ----------------------------------------------------------------------------

    def _on_register(self, message: Register) -> RegistrationResult:
        ref, descriptor = message.ref, message.descriptor
        if not isinstance(descriptor, AgentDescriptor):
            msg = f"Register needs an AgentDescriptor, got {descriptor!r}"
            raise AgentRegistrationError(msg)
        aid = descriptor.id
        urn = ref.actor_urn
        holder = self._by_urn.get(urn)
        if holder is not None and holder.id != aid:
            msg = f"{ref} is already registered as {holder.id}; deregister it before registering it as {aid}"
            raise AgentRegistrationError(msg)
        replaced = False
        old = self._agents.get(aid)
        if old is not None:
            if old.urn == urn:
                return RegistrationResult(aid, replaced=False, already_registered=True)
            logger.warning("{}: {} re-registered by {}; the stale entry of {} is replaced", self, aid, ref, old.ref)
            self._remove(old, why="replaced by a new registration")
            replaced = True
        interval = message.heartbeat_interval
        timeout = self._heartbeat_timeout if self._heartbeat_timeout is not None else 2.0 * interval
        now = self._clock.now()
        agent = _Agent(ref, descriptor, now, float(timeout))
        if self._health_policy is not None:
            agent.tracker = HealthTracker(self._health_policy, lag_degraded=1.5 * interval)
        self._agents[aid] = agent
        self._by_urn[urn] = agent
        for cap in agent.caps:
            self._by_cap.setdefault(cap, set()).add(aid)
        self._by_type.setdefault(aid.type, set()).add(aid)
        beats = self._beats.get(agent.timeout)
        if beats is None:
            beats = self._beats[agent.timeout] = OrderedDict()
        beats[aid] = agent
        agent.beats = beats
        self.watch(ref)
        agent.status_seq = 1
        if self._watchers:
            self._emit(RegistryEventKind.REGISTERED, agent, StatusChange(aid, 1, None, AgentStatus.IDLE, now))
        audit = self.actor_system.audit
        if audit.agent_activity:
            audit.emit("agent_activity", agent_event("registered", descriptor, replaced=replaced, status="idle"))
        self._place(agent)
        self._pull(agent)
        return RegistrationResult(aid, replaced=replaced)

    def _on_deregister(self, message: Deregister) -> bool:
        agent = self._agents.get(message.agent)
        if agent is None:
            return False
        self._remove(agent, why="deregistered")
        return True

    def _on_terminated(self, message: Terminated) -> None:
        urn = message.ref.actor_urn
        watcher = self._watchers.pop(urn, None)
        if watcher is not None:
            logger.debug("{}: registry watcher {} stopped; dropped", self, watcher)
        agent = self._by_urn.get(urn)
        if agent is not None:
            self._remove(agent, why=f"stopped ({message.reason!r})" if message.reason else "stopped")

    def _remove(self, agent: _Agent, *, why: str) -> None:
        """Take `agent` out of every index, reassign its attempts in flight, tell the watchers."""
        aid = agent.id
        del self._agents[aid]
        del self._by_urn[agent.urn]
        for cap in agent.caps:
            ids = self._by_cap[cap]
            ids.discard(aid)
            if not ids:
                del self._by_cap[cap]
        ids = self._by_type[aid.type]
        ids.discard(aid)
        if not ids:
            del self._by_type[aid.type]
        if agent.beats is not None:
            agent.beats.pop(aid, None)
        self._unready(agent)
        if agent.urn not in self._watchers:
            with contextlib.suppress(TypeError):  # not a troupe ref: nothing was watched
                self.unwatch(agent.ref)
        old = agent.status
        agent.offline = True
        self._set_status(agent, AgentStatus.OFFLINE, emit=False)
        change = StatusChange(aid, agent.status_seq, old, AgentStatus.OFFLINE, self._clock.now())
        if self._watchers and old is not AgentStatus.OFFLINE:
            self._emit(RegistryEventKind.DEREGISTERED, agent, change)
        elif self._watchers:
            self._emit(RegistryEventKind.DEREGISTERED, agent, None)
        audit = self.actor_system.audit
        if audit.agent_activity:
            audit.emit("agent_activity", agent_event("deregistered", agent.descriptor, reason=why))
        self._reassign(agent, why)

    # -- discovery ----------------------------------------------------------------------------

    def _on_find(self, q: FindAgents) -> tuple[AgentInfo, ...]:
        agents = self._agents
        candidates: Iterable[AgentId]
        if q.all_of:
            sets: list[set[AgentId]] = []
            for cap in q.all_of:
                ids = self._by_cap.get(cap)
                if not ids:
                    return ()
                sets.append(ids)
            smallest: set[AgentId] = min(sets, key=len)
            candidates = smallest
        elif q.types is not None:
            candidates = set().union(*(self._by_type.get(t, ()) for t in q.types))
        elif q.any_of:
            candidates = set().union(*(self._by_cap.get(c, ()) for c in q.any_of))
        else:
            candidates = agents.keys()
        found = []
        for aid in candidates:
            a = agents[aid]
            caps = a.caps
            if q.all_of and not q.all_of <= caps:
                continue
            if q.any_of and caps.isdisjoint(q.any_of):
                continue
            if q.none_of and not caps.isdisjoint(q.none_of):
                continue
            if q.types is not None and aid.type not in q.types:
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
        urn = ref.actor_urn
        if urn not in self._watchers:
            self._watchers[urn] = ref
            if urn not in self._by_urn:
                self.watch(ref)
        snapshot = RegistrySnapshot(
            self._event_seq, tuple(a.snapshot() for a in sorted(self._agents.values(), key=_order))
        )
        try:
            ref.tell(snapshot)
        except pykka.ActorDeadError:
            self._watchers.pop(urn, None)
        return self._event_seq

    def _on_unwatch(self, message: UnwatchRegistry) -> bool:
        urn = message.subscriber.actor_urn
        ref = self._watchers.pop(urn, None)
        if ref is None:
            return False
        if urn not in self._by_urn:
            with contextlib.suppress(TypeError):
                self.unwatch(ref)
        return True

    def _emit(self, kind: RegistryEventKind, agent: _Agent, change: StatusChange | None) -> None:
        self._event_seq += 1
        event = RegistryEvent(self._event_seq, kind, agent.snapshot(), change)
        dead = []
        for urn, ref in self._watchers.items():
            try:
                ref.tell(event)
            except pykka.ActorDeadError:
                dead.append(urn)
        for urn in dead:
            logger.debug("{}: registry watcher {} has stopped; dropped", self, self._watchers.pop(urn))

    # -- status, health, readiness ------------------------------------------------------------

    def _set_status(self, agent: _Agent, new: AgentStatus, *, emit: bool = True) -> None:
        old = agent.status
        if new is old:
            return
        if not is_legal(old, new):
            msg = f"{self}: illegal status change of {agent.id}: {old} -> {new}"
            raise TroupeInternalError(msg)
        agent.status = new
        agent.status_seq += 1
        agent.info = None
        audit = self.actor_system.audit
        if audit.agent_activity and emit:
            audit.emit(
                "agent_activity",
                agent_event(
                    "status_changed", agent.descriptor, old_status=str(old), status=str(new), seq=agent.status_seq
                ),
            )
        if emit and self._watchers:
            self._emit(
                RegistryEventKind.STATUS, agent, StatusChange(agent.id, agent.status_seq, old, new, self._clock.now())
            )

    def _refresh(self, agent: _Agent) -> None:
        """Re-derive `agent`'s status and its place among the ready; call after any fact changed."""
        agent.info = None
        if agent.offline or agent.blocked is not None or agent.session is not None:
            new = derive_status(
                offline=agent.offline,
                blocked=agent.blocked is not None,
                session=agent.session is not None,
                in_flight=len(agent.in_flight),
                max_concurrent=agent.max,
            )
        else:  # the common case, inlined: derive_status's last three rules
            n = len(agent.in_flight)
            new = AgentStatus.BUSY if n >= agent.max else AgentStatus.WORKING if n else AgentStatus.IDLE
        if (
            agent.offline is False
            and agent.status is AgentStatus.OFFLINE
            and new
            in (
                AgentStatus.BLOCKED,
                AgentStatus.COLLABORATING,
            )
        ):
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
        rank = _STATUS_RANK.get(agent.health)
        n = len(agent.in_flight)
        if (
            rank is None
            or agent.offline
            or agent.blocked is not None
            or agent.session is not None
            or n >= agent.max
            or agent.id not in self._agents
        ):
            self._unready(agent)
            return
        key = (rank, n)
        if agent.bucket == key:
            return
        self._unready(agent)
        bucket = self._ready.get(key)
        if bucket is None:
            bucket = self._ready[key] = OrderedDict()
            self._ready_keys = sorted(self._ready)
        bucket[agent.id] = agent
        agent.bucket = key

    def _unready(self, agent: _Agent) -> None:
        key = agent.bucket
        if key is None:
            return
        bucket = self._ready[key]
        del bucket[agent.id]
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

    def _heard(self, agent: _Agent) -> None:
        """Any message from an agent is a heartbeat."""
        agent.last_heard = self._clock.now()
        agent.info = None
        beats = agent.beats
        if beats is not None:
            if agent.id in beats:
                beats.move_to_end(agent.id)
            else:
                beats[agent.id] = agent
        if agent.offline:
            agent.offline = False
            logger.info("{}: {} is heard from again", self, agent.id)
            self._refresh(agent)
            self._pull(agent)

    def _on_heartbeat(self, message: AgentHeartbeat) -> None:
        agent = self._agents.get(message.agent)
        if agent is None:
            return
        self._heard(agent)
        tracker = agent.tracker
        if tracker is not None:
            tracker.mailbox_depth = message.mailbox_depth
            self._set_health(agent, tracker.evaluate(0.0))

    def _on_declared(self, message: AgentDeclared) -> None:
        agent = self._agents.get(message.agent)
        if agent is None:
            return
        self._heard(agent)
        agent.blocked = message.blocked
        agent.session = message.session
        self._refresh(agent)
        self._pull(agent)

    def _on_sweep(self, _message: _Sweep) -> None:
        now = self._clock.now()
        for timeout, beats in self._beats.items():
            lagging = []
            for agent in beats.values():
                lag = now - agent.last_heard
                if lag >= timeout:
                    lagging.append((agent, True))
                elif agent.tracker is not None and lag >= (agent.tracker.lag_degraded or timeout):
                    lagging.append((agent, False))
                else:
                    break
            for agent, dead in lagging:
                if dead:
                    del beats[agent.id]
                    self._go_offline(agent, lag=now - agent.last_heard)
                elif agent.tracker is not None:
                    self._set_health(agent, agent.tracker.evaluate(now - agent.last_heard))

    def _go_offline(self, agent: _Agent, *, lag: float) -> None:
        logger.warning("{}: {} not heard from for {:.3g} s; offline, its tasks go elsewhere", self, agent.id, lag)
        agent.offline = True
        self._refresh(agent)
        self._reassign(agent, f"went offline (no heartbeat for {lag:.3g} s)")
        self._refresh(agent)

    # -- tasks ----------------------------------------------------------------------------------

    def _on_submit(self, message: Submit) -> TaskHandle | None:
        future = message.future
        if future is None:
            return self._submit(message.spec, None, None)
        try:  # told with its own future (submit_task): errors go there, never into the coordinator
            handle = self._submit(message.spec, future, message.task_id)
        except Exception:  # noqa: BLE001 - handed to the caller's future
            future.set_exception()
            return None
        if handle.future is not future:  # an idempotent repeat: the caller's future follows the first
            handle.future.add_done_callback(lambda done: _copy_outcome(done, future))
        return handle

    def _submit(self, spec: TaskSpec, future: Future[Any] | None, task_id: str | None) -> TaskHandle:
        if not isinstance(spec, TaskSpec):
            msg = f"Submit needs a TaskSpec, got {spec!r}"
            raise TaskSpecError(msg)
        key = spec.idempotency_key
        if key is not None:
            existing = self._by_idem.get(key)
            if existing is not None and existing.state not in (
                TaskState.FAILED,
                TaskState.TIMED_OUT,
                TaskState.CANCELLED,
            ):
                return TaskHandle(existing.id, existing.future)
        if task_id is not None and task_id in self._tasks:
            msg = f"{self} already has a task {task_id!r}; give every submission its own task_id"
            raise TaskSpecError(msg)
        now = self._clock.now()
        task = _Task(task_id or f"{self._prefix}-{next(self._ids)}", spec, now, self._aging)
        if future is not None:
            task.future = future
        self._tasks[task.id] = task
        if key is not None:
            self._by_idem[key] = task
        self._count(task, "submitted")
        audit = self.actor_system.audit
        if audit.task_history:
            audit.emit("task_history", task_event("submitted", task.id, spec.kind))
        timeouts = spec.timeouts
        if timeouts.schedule_to_close is not None:
            self.timers.start_single_timer(
                ("s2close", task.id), _TaskTimer(task.id, 0, "schedule_to_close"), timeouts.schedule_to_close
            )
        self._schedule(task)
        return TaskHandle(task.id, task.future)

    def _count(self, task: _Task, field: str, delta: int = 1) -> None:
        overall = self._overall
        setattr(overall, field, getattr(overall, field) + delta)
        for cap in task.spec.requires:
            counters = self._per_cap.get(cap)
            if counters is None:
                counters = self._per_cap[cap] = _Counters()
            setattr(counters, field, getattr(counters, field) + delta)

    def _schedule(self, task: _Task) -> None:
        """Give `task` (state QUEUED) to the best capable agent with credit, or queue it."""
        task.state = TaskState.QUEUED
        task.queued_at = self._clock.now()
        agent = self._pick(task.spec.requires)
        if agent is not None:
            self._start(task, agent)
            return
        queue = self._queues.get(task.spec.requires)
        if queue is None:
            queue = self._queues[task.spec.requires] = []
        heapq.heappush(queue, (task.rank, next(self._qseq), task))
        self._count(task, "queued")
        s2s = task.spec.timeouts.schedule_to_start
        if s2s is not None:
            self.timers.start_single_timer(
                ("s2start", task.id), _TaskTimer(task.id, task.attempt, "schedule_to_start"), s2s
            )

    def _pick(self, requires: frozenset[str]) -> _Agent | None:
        """Return the best agent with credit holding `requires`, or None."""
        if not self._ready:
            return None
        if requires:
            smallest = None
            for cap in requires:
                ids = self._by_cap.get(cap)
                if not ids:
                    return None
                if smallest is None or len(ids) < len(smallest):
                    smallest = ids
            if smallest is not None and len(smallest) <= _SMALL_INDEX:
                best: _Agent | None = None
                best_key: tuple[tuple[int, int], float] | None = None
                agents = self._agents
                for aid in smallest:
                    a = agents[aid]
                    if a.bucket is None or not requires <= a.caps:
                        continue
                    key = (a.bucket, a.ema)
                    if best_key is None or key < best_key:
                        best, best_key = a, key
                return best
        for level in self._ready_keys:
            best = None
            seen = 0
            for a in self._ready[level].values():
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

    def _start(self, task: _Task, agent: _Agent) -> None:
        now = self._clock.now()
        task.state = TaskState.RUNNING
        task.attempt += 1
        task.agent = agent
        task.started_at = now
        attempt = task.attempt
        agent.in_flight.add((task.id, attempt))
        self._count(task, "running")
        wait = now - task.queued_at
        self._overall.wait_times.append(wait)
        for cap in task.spec.requires:
            self._per_cap[cap].wait_times.append(wait)
        timeouts = task.spec.timeouts
        timers = self.timers
        if timeouts.schedule_to_start is not None:
            timers.cancel(("s2start", task.id))
        if timeouts.start_to_close is not None:
            timers.start_single_timer(
                ("s2c", task.id), _TaskTimer(task.id, attempt, "start_to_close"), timeouts.start_to_close
            )
        if timeouts.heartbeat is not None:
            timers.start_single_timer(("hb", task.id), _TaskTimer(task.id, attempt, "heartbeat"), timeouts.heartbeat)
        audit = self.actor_system.audit
        if audit.task_history:
            audit.emit("task_history", task_event("assigned", task.id, task.spec.kind, agent=agent.id, attempt=attempt))
        # Moving the agent to the end of its new bucket is the round robin.
        self._refresh(agent)
        with contextlib.suppress(pykka.ActorDeadError):  # its Terminated is on the way: reassigned then
            agent.ref.tell(
                RunTask(Task(task.id, task.spec.kind, task.spec.payload, attempt, task.idem), self.actor_ref)
            )

    def _pull(self, agent: _Agent) -> None:
        """Let `agent` take the best queued tasks it can run, while it has credit."""
        queues = self._queues
        while agent.bucket is not None and queues:
            best_key, best = None, None
            for caps, queue in list(queues.items()):
                while queue and queue[0][2].state is not TaskState.QUEUED:
                    heapq.heappop(queue)  # cancelled or timed out while queued
                if not queue:
                    del queues[caps]
                    continue
                if caps <= agent.caps and (best_key is None or queue[0][:2] < best_key):
                    best_key, best = queue[0][:2], caps
            if best is None:
                return
            _, _, task = heapq.heappop(queues[best])
            if not queues[best]:
                del queues[best]
            self._count(task, "queued", -1)
            self._start(task, agent)

    def _release(self, agent: _Agent | None, task_id: str, attempt: int) -> None:
        """Give the agent back the slot of (task_id, attempt)."""
        if agent is None or (task_id, attempt) not in agent.in_flight:
            return
        agent.in_flight.discard((task_id, attempt))
        if agent.id in self._agents:
            self._refresh(agent)
            self._pull(agent)

    def _on_finished(self, message: TaskFinished) -> None:
        agent = self._agents.get(message.agent)
        task = self._tasks.get(message.task_id)
        current = (
            task is not None
            and task.state is TaskState.RUNNING
            and task.attempt == message.attempt
            and task.agent is agent
            and agent is not None
        )
        if agent is not None:
            self._heard(agent)
            if agent.tracker is not None and current:
                agent.tracker.record(ok=message.error is None, run_time=message.run_time)
                self._set_health(agent, agent.tracker.evaluate(0.0))
            if current:
                agent.ema = (
                    message.run_time if agent.ema == 0.0 else agent.ema + _EMA_ALPHA * (message.run_time - agent.ema)
                )
        if current and task is not None:
            self._end_attempt(task)
            if message.error is None:
                self._overall.run_times.append(message.run_time)
                for cap in task.spec.requires:
                    self._per_cap[cap].run_times.append(message.run_time)
                self._finish(task, TaskState.COMPLETED, value=message.value)
            else:
                self._attempt_failed(task, message.error)
        if agent is not None:
            self._release(agent, message.task_id, message.attempt)

    def _end_attempt(self, task: _Task) -> None:
        """The running attempt is over (for whatever reason): stop its timers and counters."""
        self._count(task, "running", -1)
        timeouts = task.spec.timeouts
        if timeouts.start_to_close is not None:
            self.timers.cancel(("s2c", task.id))
        if timeouts.heartbeat is not None:
            self.timers.cancel(("hb", task.id))

    def _attempt_failed(self, task: _Task, error: BaseException) -> None:
        if task.spec.retry.allows(task.attempt, error):
            task.state = TaskState.BACKOFF
            task.agent = None
            self._count(task, "retries")
            delay = task.spec.retry.delay(task.attempt)
            audit = self.actor_system.audit
            if audit.task_history:
                audit.emit(
                    "task_history", task_event("retrying", task.id, task.spec.kind, attempt=task.attempt, error=error)
                )
            logger.debug(
                "{}: task {} attempt {} failed ({!r}); retry in {} s", self, task.id, task.attempt, error, delay
            )
            self.timers.start_single_timer(("retry", task.id), _TaskTimer(task.id, task.attempt, "retry"), delay)
        elif isinstance(error, TaskTimeoutError):
            self._finish(task, TaskState.TIMED_OUT, error=error)
        else:
            self._finish(task, TaskState.FAILED, error=error)

    def _finish(self, task: _Task, state: TaskState, *, value: Any = None, error: BaseException | None = None) -> None:
        finished = self._finished
        finished.append(task)
        while len(finished) > self._keep_finished:
            old = finished.popleft()
            del self._tasks[old.id]
            if old.spec.idempotency_key is not None and self._by_idem.get(old.spec.idempotency_key) is old:
                del self._by_idem[old.spec.idempotency_key]
        task.state = state
        task.finished_at = self._clock.now()
        task.result = value
        task.error = error
        self._count(task, state.value)  # the counters are named for the final states
        audit = self.actor_system.audit
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
                    duration_ms=None if started is None else (self._clock.now() - started) * 1000.0,
                    error=error,
                ),
            )
        timers = self.timers
        timeouts = task.spec.timeouts
        if timeouts.schedule_to_close is not None:
            timers.cancel(("s2close", task.id))
        if timeouts.schedule_to_start is not None:
            timers.cancel(("s2start", task.id))
        if task.attempt > 1 or state is TaskState.CANCELLED:
            timers.cancel(("retry", task.id))  # only a task that failed an attempt can have one
        if error is None:
            task.future.set(value)
            key = task.spec.result_key
            if key is not None and self._result_writer is not None:
                try:
                    self._result_writer(key, value)
                except Exception:  # noqa: BLE001 - the result is delivered; the copy failed
                    logger.opt(exception=True).error("{}: writing the result of {} to {!r} failed", self, task.id, key)
        else:
            task.future.set_exception((type(error), error, error.__traceback__))

    def _reassign(self, agent: _Agent, why: str) -> None:
        """The attempts in flight on `agent` are lost: start them again elsewhere (at least once)."""
        lost = sorted(agent.in_flight)
        agent.in_flight.clear()
        agent.info = None
        for task_id, attempt in lost:
            task = self._tasks.get(task_id)
            if (
                task is None
                or task.state is not TaskState.RUNNING
                or task.attempt != attempt
                or task.agent is not agent
            ):
                continue
            self._end_attempt(task)
            task.agent = None
            if task.spec.retry.allows(task.attempt, None):
                self._count(task, "reassignments")
                logger.info("{}: task {} attempt {} reassigned: {} {}", self, task.id, attempt, agent.id, why)
                self._schedule(task)
            else:
                error = pykka.ActorDeadError(
                    f"task {task.id} ({task.spec.kind!r}) was lost: agent {agent.id} {why} during attempt {attempt}, "
                    f"its last of {task.spec.retry.maximum_attempts}"
                )
                self._finish(task, TaskState.FAILED, error=error)

    def _on_progress(self, message: TaskProgress) -> None:
        agent = self._agents.get(message.agent)
        if agent is not None:
            self._heard(agent)
        task = self._tasks.get(message.task_id)
        if (
            task is not None
            and task.state is TaskState.RUNNING
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
            if task.state is TaskState.BACKOFF and task.attempt == message.attempt:
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
            self._abort(task, TaskState.TIMED_OUT, error)
            return
        if which == "schedule_to_start":
            if task.state is TaskState.QUEUED and task.attempt == message.attempt:
                self._abort(task, TaskState.TIMED_OUT, self._no_agent_error(task))
            return
        if task.state is not TaskState.RUNNING or task.attempt != message.attempt:
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
        if task.state is TaskState.QUEUED:
            self._count(task, "queued", -1)  # its heap entry is skipped lazily
        elif task.state is TaskState.RUNNING:
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
        task = self._task(message.task_id)
        if task.state in FINAL_STATES:
            return False
        error = TaskCancelledError(f"task {task.id} ({task.spec.kind!r}) was cancelled in state {task.state}")
        self._abort(task, TaskState.CANCELLED, error)
        return True

    def _task(self, task_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            msg = f"{self} has no task {task_id!r}; use the task_id of a TaskHandle it returned"
            raise UnknownTaskError(msg)
        return task

    def _on_get_task(self, message: GetTask) -> TaskInfo:
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
        overall = self._overall
        unhealthy = sum(1 for a in self._agents.values() if a.health is Health.UNHEALTHY)
        return HealthReport(
            HealthStatus.HEALTHY,
            f"{overall.queued} tasks queued, {overall.running} running, {len(self._agents)} agents",
            {
                "queue_depth": overall.queued,
                "running": overall.running,
                "agents": len(self._agents),
                "agents_unhealthy": unhealthy,
            },
        )

    def _on_statistics(self, _message: GetCoordinationStatistics) -> CoordinationStatistics:
        by_status: dict[str, int] = {}
        by_health: dict[str, int] = {}
        for a in self._agents.values():
            by_status[str(a.status)] = by_status.get(str(a.status), 0) + 1
            by_health[str(a.health)] = by_health.get(str(a.health), 0) + 1
        return CoordinationStatistics(
            agents=len(self._agents),
            by_status=FrozenDict(sorted(by_status.items())),
            by_health=FrozenDict(sorted(by_health.items())),
            tasks=self._overall.snapshot(),
            per_capability=FrozenDict({c: n.snapshot() for c, n in sorted(self._per_cap.items())}),
            watchers=len(self._watchers),
        )


_MISSING = object()

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
    return agent.order
