"""Workflow definitions are validated when built: every bad input gets a named error."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest

from actors import Actor, WorkflowDefinitionError
from patterns.orchestrator import ExecuteWorkflow
from patterns.retry import RetryPolicy
from patterns.workflow import JoinRule, Task, TaskState, Workflow, join_decision

if TYPE_CHECKING:
    from actors import ActorSystem


def noop(_request: object) -> None:
    return None


def test_a_dependency_on_an_unknown_task_is_named() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"task 'b' depends on unknown task\(s\) \['nope'\]"):
        Workflow("w", [Task("a", noop), Task("b", noop, depends_on=["a", "nope"])])


def test_a_duplicate_task_id_is_named() -> None:
    with pytest.raises(WorkflowDefinitionError, match="duplicate task id 'a'"):
        Workflow("w", [Task("a", noop), Task("a", noop)])


def test_a_two_task_cycle_is_named_a_b_a() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        Workflow("w", [Task("a", noop, depends_on="b"), Task("b", noop, depends_on="a")])


def test_a_longer_cycle_lists_every_task_on_it_in_dependency_order() -> None:
    tasks = [Task("a", noop, depends_on="c"), Task("b", noop, depends_on="a"), Task("c", noop, depends_on="b")]
    with pytest.raises(WorkflowDefinitionError) as caught:
        Workflow("w", [Task("root", noop), *tasks])
    cycle = str(caught.value).split("cycle: ")[1].split(" (")[0].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b", "c"]
    deps = {t.id: t.depends_on for t in tasks}
    for before, after in itertools.pairwise(cycle):
        assert before in deps[after]


def test_a_task_that_depends_on_itself_is_a_cycle() -> None:
    with pytest.raises(WorkflowDefinitionError, match="cycle a -> a"):
        Task("a", noop, depends_on="a")


def test_an_empty_workflow_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError, match="has no tasks"):
        Workflow("w", [])


def test_a_target_that_is_neither_a_ref_a_callable_nor_a_task_target_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError, match="neither an actor ref, a callable"):
        Task("a", 42)


class Idle(Actor):
    pass


def test_a_stopped_actor_as_a_target_is_refused(system: ActorSystem) -> None:
    ref = system.spawn(Idle)
    ref.stop()
    with pytest.raises(WorkflowDefinitionError, match="has stopped"):
        Task("a", ref)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_a_parallel_limit_below_one_is_refused(limit: object) -> None:
    with pytest.raises(WorkflowDefinitionError, match="max_parallel must be an int >= 1"):
        ExecuteWorkflow("w", max_parallel=limit)  # type: ignore[arg-type]


def test_an_unknown_failure_policy_or_join_rule_is_refused() -> None:
    with pytest.raises(WorkflowDefinitionError, match="failure_policy"):
        ExecuteWorkflow("w", failure_policy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="unknown join rule"):
        Task("a", noop, join="any")


def test_a_bad_timeout_a_bad_retry_and_a_slash_in_an_id_are_refused() -> None:
    with pytest.raises(WorkflowDefinitionError, match="timeout must be > 0"):
        Task("a", noop, timeout=0)
    with pytest.raises(WorkflowDefinitionError, match="retry must be a RetryPolicy"):
        Task("a", noop, retry=3)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="without '/'"):
        Task("a/b", noop)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_the_order_puts_every_dependency_first() -> None:
    wf = Workflow("w", [Task("c", noop, depends_on=["a", "b"]), Task("b", noop, depends_on="a"), Task("a", noop)])
    assert wf.order.index("a") < wf.order.index("b") < wf.order.index("c")


def test_retry_delays_grow_by_the_backoff_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay=1.0, backoff=2.0, max_delay=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.should_retry(ValueError(), 1)
    assert not policy.should_retry(ValueError(), 10)
    assert not RetryPolicy(non_retryable=ValueError).should_retry(ValueError(), 1)
    assert not RetryPolicy(retry_on=KeyError).should_retry(ValueError(), 1)


def test_join_decisions_follow_airflows_trigger_rules() -> None:
    run, skip, up = TaskState.RUNNING, TaskState.SKIPPED, TaskState.UPSTREAM_FAILED
    # (rule, deps, succeeded, failed, skipped) -> decision
    cases = {
        (JoinRule.ALL_SUCCESS, 2, 1, 0, 0): None,
        (JoinRule.ALL_SUCCESS, 2, 2, 0, 0): run,
        (JoinRule.ALL_SUCCESS, 2, 1, 0, 1): skip,
        (JoinRule.ALL_SUCCESS, 2, 0, 1, 1): up,
        (JoinRule.ALL_DONE, 2, 0, 1, 1): run,
        (JoinRule.ONE_SUCCESS, 3, 1, 0, 0): run,
        (JoinRule.ONE_SUCCESS, 2, 0, 0, 2): skip,
        (JoinRule.ONE_SUCCESS, 2, 0, 1, 1): up,
        (JoinRule.NONE_FAILED, 2, 1, 0, 1): run,
        (JoinRule.NONE_FAILED, 2, 1, 1, 0): up,
    }
    for (rule, deps, s, f, k), expected in cases.items():
        assert join_decision(rule, deps, s, f, k) is expected, (rule, deps, s, f, k)
