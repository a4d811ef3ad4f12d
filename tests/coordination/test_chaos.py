"""Chaos: 10,000 tasks over 100 agents while 10 of them are killed at random moments; none is lost."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pykka

from actors import Agent, Coordinator, GetCoordinationStatistics, Submit, Task, TaskSpec
from actors.testing import ActorTestKit
from tests.coordination.agents_for_tests import spawn_agent

TASKS = 10_000
AGENTS = 100
KILLED = 10


class Worker(Agent):
    agent_type = "worker"
    capabilities = frozenset({"work"})
    max_concurrent_tasks = 2

    def __init__(self, key: str, runs: list[tuple[str, int]], **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.runs = runs

    def handle_task(self, task: Task) -> Any:
        self.runs.append((task.task_id, task.attempt))  # list.append is atomic
        return task.payload * 2

    def handle_message(self, message: Any) -> Any:
        if message == "die":
            msg = "killed by the chaos test"
            raise RuntimeError(msg)  # a tell that raises fails the agent: its mailbox is dropped
        return super().handle_message(message)


def test_no_task_is_lost_when_agents_die_mid_flight_and_duplicates_carry_a_later_attempt(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    rng = random.Random(12)
    coord = actor_testkit.spawn(Coordinator)
    runs: list[tuple[str, int]] = []
    agents = [spawn_agent(actor_testkit, Worker, f"w{i}", coord, mode=mode, runs=runs) for i in range(AGENTS)]
    victims = rng.sample(agents, KILLED)
    kill_at = sorted(rng.sample(range(TASKS // 10, TASKS * 8 // 10), KILLED))
    finished = 0
    lock = threading.Lock()
    reached = threading.Event()
    threshold = [kill_at[0]]

    def done(_future: Any) -> None:
        nonlocal finished
        with lock:
            finished += 1
            if threshold and finished >= threshold[0]:
                reached.set()

    handles = []
    for i in range(TASKS):
        handle = coord.ask(Submit(TaskSpec("double", i, requires={"work"})))
        handle.future.add_done_callback(done)
        handles.append(handle)
    for victim, at in zip(victims, kill_at, strict=True):
        with lock:
            threshold[0] = at
            if finished < at:
                reached.clear()
        assert reached.wait(30), f"stuck before {at} tasks finished"
        victim.tell("die")
    outcomes = Counter()
    for i, handle in enumerate(handles):
        try:
            assert handle.result(timeout=30) == 2 * i
            outcomes["completed"] += 1
        except pykka.ActorDeadError:  # lost on its last allowed attempt: failed after its retries
            outcomes["failed"] += 1
    assert outcomes["completed"] + outcomes["failed"] == TASKS  # none lost
    per_task = Counter(task_id for task_id, _ in runs)
    attempts: dict[str, set[int]] = {}
    for task_id, attempt in runs:
        attempts.setdefault(task_id, set()).add(attempt)
    for task_id, count in per_task.items():
        if count > 1:  # a duplicate: it had started, and every rerun is a later attempt
            assert len(attempts[task_id]) == count and max(attempts[task_id]) > 1
    stats = coord.ask(GetCoordinationStatistics())
    assert stats.agents == AGENTS - KILLED
    assert stats.tasks.completed == outcomes["completed"]
    assert stats.tasks.queued == stats.tasks.running == 0
    assert stats.tasks.reassignments >= 1  # the kills did land on tasks in flight
    assert stats.tasks.failed == outcomes["failed"]

