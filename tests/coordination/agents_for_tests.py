"""Agents and helpers shared by the coordination tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from actors import (
    ActorRef,
    Agent,
    AgentInfo,
    Coordinator,
    GetAgent,
    GetCoordinationStatistics,
    Task,
)
from actors.testing import ActorTestKit


class Echo(Agent):
    """Returns the payload; ``("fail", n)`` payloads raise on the first n attempts."""

    agent_type = "echo"
    capabilities = frozenset({"echo"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Task] = []

    def handle_task(self, task: Task) -> Any:
        self.seen.append(task)
        match task.payload:
            case ("fail", n) if task.attempt <= n:
                msg = f"attempt {task.attempt} fails on purpose"
                raise ValueError(msg)
            case ("gate", gate):
                gate.wait()
                return "opened"
        return task.payload

    def handle_message(self, message: Any) -> Any:
        if message == "seen":
            return [(t.task_id, t.attempt, t.idempotency_key) for t in self.seen]
        return super().handle_message(message)


class AsyncEcho(Agent):
    """An async handler: ``("hold", future)`` awaits a `concurrent.futures.Future` the test settles; else echoes."""

    agent_type = "async-echo"
    capabilities = frozenset({"echo"})
    max_concurrent_tasks = 4

    async def handle_task(self, task: Task) -> Any:
        match task.payload:
            case ("hold", future):
                return await asyncio.wrap_future(future)
            case ("forever",):
                await asyncio.Event().wait()
        return task.payload


class Gate:
    """A gate a plain handler blocks on until the test opens it (a hang guard bounds the wait)."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()

    def wait(self) -> None:
        self.entered.set()
        assert self.opened.wait(10), "the test never opened the gate"

    def open(self) -> None:
        self.opened.set()


def spawn_agent(
    kit: ActorTestKit, cls: type[Agent], key: str, coordinator: ActorRef[Any], **kwargs: Any
) -> ActorRef[Any]:
    """Spawn an agent and return once its registration is in the coordinator's mailbox."""
    ref = kit.spawn(cls, key, coordinator=coordinator, **kwargs)
    kit.agent_id(ref)  # its on_start (which sends Register) has run
    return ref


def info(coordinator: ActorRef[Any], agent: str) -> AgentInfo:
    found = coordinator.ask(GetAgent(agent))
    assert found is not None, f"{agent} is not registered"
    return found  # type: ignore[no-any-return]


def settle(kit: ActorTestKit, coordinator: ActorRef[Any], *agents: ActorRef[Any]) -> None:
    """Wait until the coordinator, each agent, then the coordinator again, has handled what it was sent so far.

    That covers the chain a timer starts: coordinator -> agent -> coordinator.
    """
    coordinator.ask(GetCoordinationStatistics())
    for agent in agents:
        kit.agent_id(agent)
    coordinator.ask(GetCoordinationStatistics())


def beat(
    kit: ActorTestKit, coordinator: ActorRef[Any], agents: list[ActorRef[Any]], seconds: float, step: float
) -> None:
    """Advance the clock by `seconds` in steps of `step`, letting every message settle between steps."""
    done = 0.0
    while done < seconds:
        kit.advance(step)
        done += step
        settle(kit, coordinator, *agents)


def spawn_coordinator(kit: ActorTestKit, **kwargs: Any) -> ActorRef[Any]:
    return kit.spawn(Coordinator, **kwargs)
