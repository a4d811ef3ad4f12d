"""`Agent`: the actor base class for agents the `Coordinator` gives tasks to.

An agent is a mode-neutral actor: spawn it pooled, on its own thread or on
the event loop like any actor. Override `handle_task` (plain or ``async
def``; a class with an ``async def handle_task`` runs in asyncio mode by
default, as the runtime does for any coroutine method)::

    class Summarizer(Agent):
        agent_type = "summarizer"
        capabilities = frozenset({"summarize"})

        def handle_task(self, task: Task) -> str:
            return task.payload[:100]

    ref = system.spawn(Summarizer, "s1", coordinator=coordinator)

What it does for you:

- Registers with `coordinator` (if given) from ``on_start``; an agent that
  stops leaves the registry by itself (the coordinator watches it).
- Heartbeats go through its own mailbox: a periodic timer message, handled
  like any other, makes it tell the coordinator `AgentHeartbeat`. An agent
  stuck in a handler sends none, so it is seen offline after the timeout.
  Every message it sends the coordinator counts as a beat too.
- Runs `RunTask` messages: a plain handler in the agent's turn (tasks run
  one after the other, the rest wait in the mailbox); an async handler as a
  task on the loop, so up to ``max_concurrent_tasks`` run concurrently and
  the mailbox stays free (a `CancelRun` cancels it). Results and errors go
  back as `TaskFinished`.
- `blocked` and `collaborating` declare what the status should say.

Threading: every method runs on the agent's turn (its thread, a dispatcher,
or the loop thread); a finished async task reports from its done callback on
the loop thread, between turns. If you override ``on_start`` or ``on_stop``,
call ``super()``'s.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import attrs
import pykka
from loguru import logger

from actors._core import Actor, FrozenDict, check_ref
from actors.coordination.identity import AgentDescriptor, AgentId
from actors.coordination.messages import (
    AgentDeclared,
    AgentHeartbeat,
    CancelRun,
    Register,
    RunTask,
    TaskFinished,
    TaskProgress,
    _task_finished,
)
from actors.coordination.tasks import Task
from actors.errors import TaskCancelledError, TaskSpecError

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "Agent"]

DEFAULT_HEARTBEAT_INTERVAL = 30.0
"""Seconds between heartbeats (seed 000); the coordinator's default timeout is twice that."""

# The attempt being run: the `Task` itself (its id and attempt), no tuple made per task.
_current: contextvars.ContextVar[Task | None] = contextvars.ContextVar("troupe_agent_task", default=None)

# Results that are surely not awaitable: `inspect.isawaitable` (an ABC check) is skipped for them.
_PLAIN_RESULTS = frozenset({type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset})


@attrs.frozen
class _Beat:
    """The heartbeat timer's message (private: only the agent's own timer sends it)."""


_BEAT_TIMER = "troupe-agent-heartbeat"


async def _await(awaitable: Any) -> Any:
    return await awaitable


class Agent(Actor):
    """Base class of agents; see the module docstring.

    Class attributes (constructor arguments override them): `agent_type`,
    `capabilities`, `attributes`, `max_concurrent_tasks`, `heartbeat_interval`.
    """

    agent_type: ClassVar[str] = "agent"
    capabilities: frozenset[str] = frozenset()
    attributes: Mapping[str, Any] = FrozenDict()
    max_concurrent_tasks: int = 1
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL

    def __init__(
        self,
        key: str | AgentId | None = None,
        *,
        capabilities: Iterable[str] | None = None,
        attributes: Mapping[str, Any] | None = None,
        max_concurrent_tasks: int | None = None,
        coordinator: pykka.ActorRef[Any] | None = None,
        heartbeat_interval: float | None = None,
    ) -> None:
        """Build the agent's descriptor; `key` defaults to the actor's name, or its URN's tail."""
        super().__init__()
        if key is None:
            key = self.actor_name or self.actor_urn.rsplit(":", 1)[-1]
        agent_id = key if isinstance(key, AgentId) else AgentId(type(self).agent_type, key)
        self.descriptor = AgentDescriptor(
            agent_id,
            self.capabilities if capabilities is None else capabilities,
            self.attributes if attributes is None else attributes,
            self.max_concurrent_tasks if max_concurrent_tasks is None else max_concurrent_tasks,
        )
        self.agent_id: AgentId = self.descriptor.id
        interval = self.heartbeat_interval if heartbeat_interval is None else heartbeat_interval
        if not (isinstance(interval, int | float) and interval > 0):
            msg = f"{agent_id}: heartbeat_interval must be > 0 seconds, got {interval!r}"
            raise TaskSpecError(msg)
        self.heartbeat_interval = float(interval)
        check_ref("coordinator", coordinator, optional=True, owner=str(agent_id))
        self.coordinator = coordinator
        # Invariant: the async attempts running now, by (task_id, attempt); loop thread only.
        self._running: dict[tuple[str, int], asyncio.Task[Any]] = {}
        # The attempt a plain `handle_task` runs now (None between them); the agent's turn only.
        # An attribute, not `_current` (set and reset per task, ~0.3 µs): async attempts
        # run concurrently, so they carry theirs in `_current`, which `report_progress` reads first.
        self._plain_task: Task | None = None
        clock = self.actor_system.clock
        # The real clock's `now` is `time.monotonic` itself (`MonotonicClock`): a C call a reading.
        self._now: Callable[[], float] = clock.now

    # -- hooks ---------------------------------------------------------------------

    def handle_task(self, task: Task) -> Any:
        """Run one attempt of `task` and return its result (override; may be ``async def``).

        ``task.attempt > 1`` means it may have run before; ``task.idempotency_key``
        is the same on every attempt. Raise to fail the attempt: the
        coordinator retries it by the task's `RetryPolicy`.
        """
        msg = f"{type(self).__name__} ({self.agent_id}) does not handle tasks; override handle_task"
        raise NotImplementedError(msg)

    def handle_message(self, message: Any) -> Any:
        """Handle a message that is not the coordinator's (override). Default: refuse it with TypeError."""
        msg = f"{self.agent_id} does not understand {message!r}; override Agent.handle_message"
        raise TypeError(msg)

    # -- for the agent's own code -----------------------------------------------------

    @contextmanager
    def blocked(self, reason: str) -> Iterator[None]:
        """Declare the agent blocked while the block runs (status BLOCKED: it gets no new task)."""
        self._declare(blocked=reason)
        try:
            yield
        finally:
            self._declare(blocked=None)

    @contextmanager
    def collaborating(self, session: str) -> Iterator[None]:
        """Declare the agent in a session while the block runs (status COLLABORATING)."""
        self._declare(session=session)
        try:
            yield
        finally:
            self._declare(session=None)

    def report_progress(self, details: Any = None) -> None:
        """Heartbeat the task being run now (resets its heartbeat timeout); call it from `handle_task`."""
        current = _current.get()
        if current is None:
            current = self._plain_task
        if current is not None:
            self._tell(self.coordinator, TaskProgress(self.agent_id, current.task_id, current.attempt, details))

    # -- runtime -------------------------------------------------------------------------

    def on_start(self) -> Any:
        """Start the heartbeat timer; register with the coordinator if one was given."""
        self.timers.start_periodic_timer(_BEAT_TIMER, _Beat(), self.heartbeat_interval)
        if self.coordinator is not None:
            future = self.coordinator.ask(
                Register(self.actor_ref, self.descriptor, self.heartbeat_interval), block=False
            )
            future.add_done_callback(self._registered)  # type: ignore[attr-defined]  # troupe's Future
        return None

    def _registered(self, future: Any) -> None:
        # Runs on whichever thread answered; it only logs.
        try:
            future.get(timeout=0)
        except Exception:  # noqa: BLE001 - a registration that failed is reported, not raised into nowhere
            logger.opt(exception=True).warning("{}: registration with {} failed", self.agent_id, self.coordinator)

    def on_stop(self) -> None:
        """Cancel the async attempts still running (the coordinator reassigns them)."""
        for task in self._running.values():
            task.cancel()
        self._running.clear()

    def on_failure(self, *_exc_info: object) -> None:
        """The agent failed: cancel its async attempts too (the coordinator reassigns them)."""
        Agent.on_stop(self)

    def on_receive(self, message: Any) -> Any:
        """Run tasks and heartbeats; pass anything else to `handle_message`."""
        cls = message.__class__
        if cls is RunTask:
            return self._run(message)
        if cls is _Beat:
            self._tell(self.coordinator, AgentHeartbeat(self.agent_id, self._mailbox_depth()))
            return None
        if cls is CancelRun:
            key = (message.task_id, message.attempt)
            running = self._running.pop(key, None)
            if running is not None:
                running.cancel()
            return None
        return self.handle_message(message)

    def _tell(self, coordinator: pykka.ActorRef[Any] | None, message: Any) -> None:
        """Tell the coordinator; if it has stopped the message is a dead letter already, and the agent goes on."""
        if coordinator is None:
            return
        try:
            coordinator.tell(message)
        except pykka.ActorDeadError:
            logger.debug(
                "{}: coordinator {} has stopped; {!r} went to dead letters", self.agent_id, coordinator, message
            )

    def _mailbox_depth(self) -> int:
        queue = getattr(self.actor_inbox, "queue", None)
        return len(queue) if queue is not None else 0

    def _declare(self, *, blocked: str | None = None, session: str | None = None) -> None:
        self._tell(self.coordinator, AgentDeclared(self.agent_id, blocked, session))

    def _run(self, message: RunTask) -> None:
        task = message.task
        coordinator = message.coordinator
        if self.coordinator is None:
            self.coordinator = coordinator
        now = self._now
        started = now()
        self._plain_task = task
        try:
            result = self.handle_task(task)
        except Exception as error:  # noqa: BLE001 - the coordinator gets it, and retries by policy
            self._tell(
                coordinator, TaskFinished(self.agent_id, task.task_id, task.attempt, None, error, now() - started)
            )
            return
        finally:
            self._plain_task = None
        if result.__class__ not in _PLAIN_RESULTS and inspect.isawaitable(result):
            self._start_async(task, coordinator, result, started)
            return
        finished = _task_finished(self.agent_id, task.task_id, task.attempt, result, None, now() - started)
        try:
            coordinator.tell(finished)
        except pykka.ActorDeadError:  # as `_tell`, inlined: one call fewer per task
            logger.debug(
                "{}: coordinator {} has stopped; {!r} went to dead letters", self.agent_id, coordinator, finished
            )

    def _start_async(self, task: Task, coordinator: pykka.ActorRef[Any], awaitable: Any, started: float) -> None:
        key = (task.task_id, task.attempt)
        clock = self.actor_system.clock

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = (
                f"{self.agent_id}: handle_task returned an awaitable, but the agent runs without an event loop; "
                "spawn it with mode='asyncio' (an agent with an async def handle_task does so by default)"
            )
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            self._tell(coordinator, TaskFinished(self.agent_id, task.task_id, task.attempt, None, TypeError(msg), 0.0))
            return
        if not inspect.iscoroutine(awaitable):
            awaitable = _await(awaitable)
        context = contextvars.copy_context()
        context.run(_current.set, task)  # report_progress inside the task knows its attempt
        running = loop.create_task(awaitable, name=f"{self.agent_id}:{task.task_id}#{task.attempt}", context=context)
        self._running[key] = running

        def done(t: asyncio.Task[Any]) -> None:
            self._running.pop(key, None)
            run_time = clock.now() - started
            if t.cancelled():
                error: BaseException | None = TaskCancelledError(f"{self.agent_id}: attempt {key} was cancelled")
                value = None
            else:
                error = t.exception()
                value = None if error is not None else t.result()
            self._tell(coordinator, TaskFinished(self.agent_id, task.task_id, task.attempt, value, error, run_time))

        running.add_done_callback(done)
