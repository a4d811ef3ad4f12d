"""Chaos: 10,000 tasks over 100 agents while 10 of them die at random moments; none is lost."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pykka

from actors import Agent, Coordinator, GetCoordinationStatistics, RunTask, Submit, Task, TaskSpec
from actors.testing import ActorTestKit
from tests.coordination.agents_for_tests import spawn_agent

TASKS = 10_000
AGENTS = 100
KILLED = 10


class Worker(Agent):
    agent_type = "worker"
    capabilities = frozenset({"work"})
    max_concurrent_tasks = 2

    def __init__(self, key: str, runs: list[tuple[str, int]], die_at: int | None = None, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.runs = runs
        self.die_at = die_at
        self.handled = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunTask):
            self.handled += 1
            self.runs.append((message.task.task_id, message.task.attempt))  # list.append is atomic
            if self.handled == self.die_at:
                # Raised out of on_receive for a tell: the agent fails mid-task, its
                # mailbox is dropped, and the coordinator sees Terminated with the error.
                msg = f"{self.agent_id} killed by the chaos test"
                raise RuntimeError(msg)
        return super().on_receive(message)

    def handle_task(self, task: Task) -> Any:
        return task.payload * 2


def test_no_task_is_lost_when_agents_die_mid_flight_and_duplicates_carry_a_later_attempt(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    rng = random.Random(12)
    coord = actor_testkit.spawn(Coordinator)
    runs: list[tuple[str, int]] = []
    handles = [coord.ask(Submit(TaskSpec("double", i, requires={"work"}))) for i in range(TASKS)]
    victims = dict(zip(rng.sample(range(AGENTS), KILLED), (rng.randint(1, 40) for _ in range(KILLED)), strict=True))
    for i in range(AGENTS):
        try:
            spawn_agent(actor_testkit, Worker, f"w{i}", coord, mode=mode, runs=runs, die_at=victims.get(i))
        except pykka.ActorDeadError:
            # A victim may be given a task and die of it before spawn_agent reads its id back.
            assert i in victims, f"w{i} died, but it was not one of the victims"
    outcomes: Counter[str] = Counter()
    for i, handle in enumerate(handles):
        try:
            assert handle.result(timeout=30) == 2 * i
            outcomes["completed"] += 1
        except pykka.ActorDeadError:  # lost on its last allowed attempt: failed after its retries
            outcomes["failed"] += 1
    assert outcomes["completed"] + outcomes["failed"] == TASKS  # none lost
    attempts: dict[str, list[int]] = {}
    for task_id, attempt in runs:
        attempts.setdefault(task_id, []).append(attempt)
    duplicated = {task_id: seen for task_id, seen in attempts.items() if len(seen) > 1}
    assert duplicated  # the victims died holding tasks
    for seen in duplicated.values():  # a task ran twice only as a later attempt, never twice as the same one
        assert len(set(seen)) == len(seen)
        assert max(seen) > 1
    stats = coord.ask(GetCoordinationStatistics())
    died = AGENTS - stats.agents  # a victim spawned late may finish before its turn to die
    assert 0 < died <= KILLED
    assert (stats.tasks.completed, stats.tasks.failed) == (outcomes["completed"], outcomes["failed"])
    assert stats.tasks.queued == stats.tasks.running == 0
    assert stats.tasks.reassignments >= died
