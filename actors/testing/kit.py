"""`ActorTestKit` and `TestProbe` (see the package docstring).

Threading: the kit and probes are used from the test's thread. A probe's
actor records messages on whichever thread runs it, under a condition
variable the test thread waits on.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Self, cast

import attrs
import pykka

from actors import (
    Actor,
    ActorRef,
    ActorSystem,
    Agent,
    AgentHeartbeat,
    AgentId,
    ExpectationError,
    ManualClock,
    RunTask,
    Task,
    TaskFinished,
    Terminated,
)

__all__ = ["ActorTestKit", "TestProbe"]

DEFAULT_TIMEOUT = 5.0
"""Real seconds a probe waits for an expected message before failing (a hang guard)."""

DEFAULT_GRACE = 0.1
"""Real seconds `TestProbe.expect_no_message` watches for a message that should not come."""

_NOTHING = object()


@attrs.frozen
class _Watch:
    ref: pykka.ActorRef[Any] = attrs.field(eq=False)


class _ProbeActor(Actor):
    """Records every message in the probe's inbox; answers asks with the probe's reply."""

    def __init__(self, probe: TestProbe) -> None:
        super().__init__()
        self._probe = probe

    def on_receive(self, message: Any) -> Any:
        if message.__class__ is _Watch:
            self.watch(message.ref)
            return None
        probe = self._probe
        with probe._cond:  # noqa: SLF001 - the probe and its actor are one thing
            probe._inbox.append(message)  # noqa: SLF001
            probe._cond.notify_all()  # noqa: SLF001
        reply = probe._reply  # noqa: SLF001
        return reply(message) if reply is not None else None


class TestProbe:
    """An actor you can send to, and expectations on what it received (in order)."""

    __test__ = False  # not a pytest test class

    def __init__(self, kit: ActorTestKit, name: str | None = None) -> None:
        self.kit = kit
        self._cond = threading.Condition()
        self._inbox: deque[Any] = deque()
        self._reply: Callable[[Any], Any] | None = None
        self.ref: ActorRef[Any] = kit.system.spawn(_ProbeActor, self, name=name)

    def reply_with(self, reply: Callable[[Any], Any] | Any) -> None:
        """Answer every ask with `reply(message)` if callable, else with `reply`.

        It is called for every message, asked or told (an actor cannot tell
        them apart); return None for those you do not answer. An exception
        it raises for a told message fails the probe, as any actor's would.
        """
        self._reply = reply if callable(reply) else (lambda _message: reply)

    def watch(self, ref: pykka.ActorRef[Any]) -> None:
        """Watch `ref`: its `Terminated` arrives like any message (see `expect_terminated`)."""
        self.ref.ask(_Watch(ref))

    def received(self) -> list[Any]:
        """Return the messages received and not yet taken by an expectation."""
        with self._cond:
            return list(self._inbox)

    def expect_message(
        self,
        expected: type | Any = _NOTHING,
        *,
        within: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Any:
        """Take the next message and check it: an instance of `expected` (a type), or equal to it.

        Args:
            expected: a type, a value, or nothing (any message).
            within: manual-clock seconds to advance first (timers due by then fire).
            timeout: real seconds to wait, a hang guard.

        Raises:
            ExpectationError: no message came, or not the one expected.
        """
        if within is not None:
            self.kit.advance(within)
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._inbox), timeout):
                what = "any message" if expected is _NOTHING else repr(expected)
                msg = f"{self.ref} expected {what}, but nothing arrived "
                msg += f" (within {within} s on the clock, {timeout} s real)"
                raise ExpectationError(msg)
            message = self._inbox.popleft()
        if expected is _NOTHING:
            return message
        ok = isinstance(message, expected) if isinstance(expected, type) else message == expected
        if not ok:
            msg = f"{self.ref} expected {expected!r}, got {message!r}"
            raise ExpectationError(msg)
        return cast("Terminated", message)

    def expect_messages(
        self, count: int, *, within: float | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Any]:
        """Take the next `count` messages, in order."""
        if within is not None:
            self.kit.advance(within)
        return [self.expect_message(timeout=timeout) for _ in range(count)]

    def fish_for(self, predicate: Callable[[Any], bool], *, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Take messages until one satisfies `predicate`; return it (the others are dropped)."""
        while True:
            message = self.expect_message(timeout=timeout)
            if predicate(message):
                return message

    def expect_no_message(self, *, within: float = 0.0, grace: float = DEFAULT_GRACE) -> None:
        """Advance the clock by `within`, then fail if a message is there or comes within `grace` real seconds."""
        if within:
            self.kit.advance(within)
        with self._cond:
            if self._cond.wait_for(lambda: bool(self._inbox), grace):
                msg = f"{self.ref} expected no message, got {self._inbox[0]!r}"
                raise ExpectationError(msg)

    def expect_terminated(self, ref: pykka.ActorRef[Any], *, timeout: float = DEFAULT_TIMEOUT) -> Terminated:
        """Take the next message: it must be `Terminated` for `ref` (after `watch`)."""
        message = self.expect_message(Terminated, timeout=timeout)
        if message.ref != ref:
            msg = f"{self.ref} expected Terminated of {ref}, got one of {message.ref}"
            raise ExpectationError(msg)
        return cast("Terminated", message)


class ActorTestKit:
    """A system on a manual clock for one test; `shutdown` (or leaving ``with``) checks no thread leaked.

    Args:
        clock: the clock (a fresh `ManualClock` by default).
        dispatchers: dispatcher threads of the system (2).
        name: the system's name.
    """

    __test__ = False

    _ids = itertools.count(1)

    def __init__(self, *, clock: ManualClock | None = None, dispatchers: int = 2, name: str | None = None) -> None:
        self._before = set(threading.enumerate())
        self.clock = clock if clock is not None else ManualClock()
        self.system = ActorSystem(name or f"testkit-{next(self._ids)}", clock=self.clock, dispatchers=dispatchers)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    def spawn(self, actor_class: type[pykka.Actor], *args: Any, **kwargs: Any) -> ActorRef[Any]:
        """`ActorSystem.spawn` on the kit's system."""
        return self.system.spawn(actor_class, *args, **kwargs)

    def probe(self, name: str | None = None) -> TestProbe:
        """Return a new `TestProbe`."""
        return TestProbe(self, name)

    def advance(self, seconds: float) -> None:
        """Advance the manual clock: timers due by then fire, in order."""
        self.clock.advance(seconds)

    # -- agents ----------------------------------------------------------------------------

    def run_task(
        self,
        agent: ActorRef[Any],
        kind: str,
        payload: Any = None,
        *,
        attempt: int = 1,
        task_id: str = "task-1",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> TaskFinished:
        """Hand `agent` one task as the coordinator would; return the `TaskFinished` it reports."""
        probe = self.probe()
        try:
            agent.tell(RunTask(Task(task_id, kind, payload, attempt, task_id), probe.ref))
            done = probe.fish_for(lambda m: isinstance(m, TaskFinished) and m.task_id == task_id, timeout=timeout)
            return cast("TaskFinished", done)
        finally:
            probe.ref.stop()

    def expect_heartbeats(
        self, probe: TestProbe, count: int = 1, *, interval: float | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> list[AgentHeartbeat]:
        """Advance the clock `count` heartbeat intervals; return the `AgentHeartbeat`s `probe` got.

        The agent must have been spawned with ``coordinator=probe.ref`` (the
        probe answers its registration). `interval` defaults to the agents' default.
        """
        step = interval if interval is not None else Agent.heartbeat_interval
        beats = []
        for _ in range(count):
            self.advance(step)
            beats.append(probe.fish_for(lambda m: isinstance(m, AgentHeartbeat), timeout=timeout))
        return beats

    def agent_id(self, agent: ActorRef[Any]) -> AgentId:
        """Return the `AgentId` of a running agent."""
        return cast("AgentId", agent.proxy().agent_id.get(timeout=DEFAULT_TIMEOUT))

    def shutdown(self, *, timeout: float = 10.0, grace: float = 2.0) -> None:
        """Stop the system; raise `ExpectationError` if a thread started since the kit was made is still alive.

        A thread that is finishing gets `grace` real seconds to end.
        """
        if self.system.is_running:
            self.system.shutdown(timeout=timeout)
        leaked = [t for t in threading.enumerate() if t not in self._before and t.is_alive()]
        for thread in leaked:
            thread.join(timeout=grace)
        names = [t.name for t in leaked if t.is_alive()]
        if names:
            msg = f"the test left threads running after the kit's system shut down: {names}"
            raise ExpectationError(msg)
