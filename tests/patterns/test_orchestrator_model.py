"""Random DAGs against a model: dependency order, one terminal state each, join rules, fail-fast, results.

The model evaluates the DAG sequentially in topological order with the same
join rules (`join_decision`); the orchestrator runs it concurrently on its
worker pool. Whatever the interleaving, what it decides must match.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import MODES, ActorSystem
from patterns.orchestrator import ExecutionState, WorkflowClient, WorkflowOrchestrator
from patterns.workflow import JoinRule, RunTask, Skip, Task, TaskState, Workflow, join_decision
from tests.core.actors_for_tests import WAIT

MODULUS = 1_000_003


def combine(task_id: str, inputs: dict[str, int]) -> int:
    """A no-op task that combines its inputs: order-independent, sensitive to every input."""
    value = int(task_id[1:]) * 7919 + 1
    for name, item in sorted(inputs.items()):
        value = (value * 31 + item * (int(name[1:]) + 3)) % MODULUS
    return value


@attrs.frozen
class Node:
    deps: tuple[int, ...]
    rule: JoinRule
    outcome: str  # "ok", "fail" or "skip"


@st.composite
def dags(draw: st.DrawFn, *, rules: list[JoinRule], outcomes: list[str]) -> list[Node]:
    n = draw(st.integers(1, 9))
    nodes = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        nodes.append(Node(tuple(sorted(deps)), draw(st.sampled_from(rules)), draw(st.sampled_from(outcomes))))
    return nodes


def model(nodes: list[Node]) -> tuple[dict[str, TaskState], dict[str, int]]:
    """Sequential evaluation: each task's state, and the results of those that succeed."""
    states: dict[str, TaskState] = {}
    results: dict[str, int] = {}
    for i, node in enumerate(nodes):
        ids = [f"t{d}" for d in node.deps]
        succeeded = sum(states[d] is TaskState.SUCCEEDED for d in ids)
        skipped = sum(states[d] is TaskState.SKIPPED for d in ids)
        failed = len(ids) - succeeded - skipped
        decision = join_decision(node.rule, len(ids), succeeded, failed, skipped) if ids else TaskState.RUNNING
        assert decision is not None  # every dependency has ended in a sequential evaluation
        task_id = f"t{i}"
        if decision is TaskState.RUNNING:
            decision = {"ok": TaskState.SUCCEEDED, "fail": TaskState.FAILED, "skip": TaskState.SKIPPED}[node.outcome]
            if decision is TaskState.SUCCEEDED:
                results[task_id] = combine(task_id, {d: results[d] for d in ids if d in results})
        states[task_id] = decision
    return states, results


class Log:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str]] = []
        self.inputs: dict[str, dict[str, int]] = {}

    def task(self, node: Node) -> Any:
        def run(request: RunTask) -> Any:
            with self.lock:
                self.events.append(("start", request.task_id))
                self.inputs[request.task_id] = dict(request.inputs)
            value = combine(request.task_id, dict(request.inputs))
            with self.lock:
                self.events.append(("end", request.task_id))
            if node.outcome == "fail":
                msg = f"{request.task_id} fails on purpose"
                raise ValueError(msg)
            return Skip() if node.outcome == "skip" else value

        return run


def execute(mode: str, nodes: list[Node], *, policy: str, max_parallel: int | None) -> tuple[Any, Log]:
    log = Log()
    tasks = [
        Task(f"t{i}", log.task(node), depends_on=[f"t{d}" for d in node.deps], join=node.rule)
        for i, node in enumerate(nodes)
    ]
    with ActorSystem("model", dispatchers=2) as system:
        client = WorkflowClient(system.spawn(WorkflowOrchestrator, mode=mode, workers=3), timeout=WAIT)
        client.define(Workflow("dag", tasks))
        execution_id = client.execute("dag", failure_policy=policy, max_parallel=max_parallel)  # type: ignore[arg-type]
        status = client.wait_for_completion(execution_id, timeout=WAIT)
    return status, log


def check_order(nodes: list[Node], log: Log) -> None:
    """A task starts only after the dependencies it depends on (all, or its inputs for one_success) ended."""
    index = {event: n for n, event in enumerate(log.events)}
    for i, node in enumerate(nodes):
        start = index.get(("start", f"t{i}"))
        if start is None:
            continue
        needed = log.inputs[f"t{i}"] if node.rule is JoinRule.ONE_SUCCESS else [f"t{d}" for d in node.deps]
        for dep in needed:
            if ("start", dep) in index:  # a dependency decided without running has no events
                assert index[("end", dep)] < start, f"t{i} started before {dep} ended"
        assert log.events.count(("start", f"t{i}")) == 1


ALL_RULES = list(JoinRule)
OUTCOMES = ["ok", "ok", "ok", "fail", "skip"]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("mode", sorted(MODES))
@SETTINGS
@given(nodes=dags(rules=ALL_RULES, outcomes=OUTCOMES), max_parallel=st.sampled_from([None, 1, 2]))
def test_run_all_matches_the_sequential_model_whatever_the_interleaving(
    mode: str, nodes: list[Node], max_parallel: int | None
) -> None:
    status, log = execute(mode, nodes, policy="run_all", max_parallel=max_parallel)
    expected, _ = model(nodes)
    states = {t.task_id: t.state for t in status.tasks}
    assert all(state.terminal for state in states.values())
    assert states == expected
    failed = TaskState.FAILED in expected.values()
    assert status.state is (ExecutionState.FAILED if failed else ExecutionState.SUCCEEDED)
    check_order(nodes, log)
    # Each result is its task's combination of the inputs it was given, which are
    # the results of dependencies that succeeded (all of them unless one_success).
    for i, node in enumerate(nodes):
        task = status.task(f"t{i}")
        if task.state is not TaskState.SUCCEEDED:
            continue
        given_inputs = log.inputs[f"t{i}"]
        succeeded = {f"t{d}" for d in node.deps if states[f"t{d}"] is TaskState.SUCCEEDED}
        if node.rule is JoinRule.ONE_SUCCESS and node.deps:
            assert given_inputs
            assert set(given_inputs) <= succeeded
        else:
            assert set(given_inputs) == succeeded
        assert given_inputs == {d: status.task(d).result for d in given_inputs}
        assert task.result == combine(f"t{i}", given_inputs)


@pytest.mark.parametrize("mode", sorted(MODES))
@SETTINGS
@given(nodes=dags(rules=ALL_RULES, outcomes=OUTCOMES), max_parallel=st.sampled_from([None, 1, 2]))
def test_fail_fast_agrees_with_the_model_on_everything_it_did_not_cancel(
    mode: str, nodes: list[Node], max_parallel: int | None
) -> None:
    status, log = execute(mode, nodes, policy="fail_fast", max_parallel=max_parallel)
    expected, _ = model(nodes)
    states = {t.task_id: t.state for t in status.tasks}
    assert all(state.terminal for state in states.values())
    for task_id, state in states.items():
        if state is not TaskState.CANCELLED:
            assert state == expected[task_id], task_id
    model_fails = TaskState.FAILED in expected.values()
    assert (TaskState.FAILED in states.values()) == model_fails
    if model_fails:
        assert status.state is ExecutionState.FAILED
    else:
        assert status.state is ExecutionState.SUCCEEDED
        assert TaskState.CANCELLED not in states.values()
    check_order(nodes, log)


@pytest.mark.parametrize("mode", sorted(MODES))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=dags(rules=[JoinRule.ALL_SUCCESS, JoinRule.ALL_DONE, JoinRule.NONE_FAILED], outcomes=["ok"]))
def test_no_op_combiners_give_the_results_of_a_sequential_topological_evaluation(mode: str, nodes: list[Node]) -> None:
    status, _ = execute(mode, nodes, policy="run_all", max_parallel=None)
    _, expected = model(nodes)
    assert status.results() == expected
