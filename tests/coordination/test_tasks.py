"""Task assignment: credit, ranking, queueing, Temporal's timeouts, retries, reassignment, cancel.

All on the manual clock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pykka
import pytest

from actors import (
    ActorSystem,
    AgentDescriptor,
    AgentId,
    AgentStatus,
    CancelTask,
    CoordinationStoppedError,
    Coordinator,
    DeadLetterReason,
    FindAgents,
    Future,
    GetCoordinationStatistics,
    GetEntry,
    GetTask,
    Health,
    HealthPolicy,
    ManualClock,
    Register,
    RegistryEvent,
    RegistryEventKind,
    RetryPolicy,
    RunTask,
    SetEntry,
    StateStore,
    Submit,
    Task,
    TaskCancelledError,
    TaskFinished,
    TaskSpec,
    TaskSpecError,
    TaskState,
    TaskTimeoutError,
    Timeouts,
    UnknownTaskError,
    WatchRegistry,
    submit_task,
)
from actors.testing import ActorTestKit
from tests.coordination.agents_for_tests import (
    AsyncEcho,
    Echo,
    Gate,
    beat,
    info,
    settle,
    spawn_agent,
    spawn_coordinator,
)

WAIT = 5.0


def submit(coord: Any, kind: str = "echo", payload: Any = None, **kwargs: Any) -> Any:
    kwargs.setdefault("requires", {"echo"})
    return coord.ask(Submit(TaskSpec(kind, payload, **kwargs)))


def test_a_task_runs_on_a_capable_agent_and_its_future_gets_the_result(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit, mode=mode)  # the coordinator runs in every mode too
    spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    handle = submit(coord, payload={"n": 1})
    assert handle.result(timeout=WAIT) == {"n": 1}
    task = coord.ask(GetTask(handle.task_id))
    assert (task.state, task.attempt, str(task.agent)) == (TaskState.COMPLETED, 1, "echo/e1")


def test_an_async_handler_runs_on_the_loop_and_tasks_overlap_up_to_the_agents_slots(
    actor_testkit: ActorTestKit,
) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, AsyncEcho, "a1", coord)  # async def handle_task: asyncio mode, 4 slots
    held: list[concurrent.futures.Future[Any]] = [concurrent.futures.Future() for _ in range(5)]
    handles = [submit(coord, payload=("hold", f)) for f in held]
    agent = info(coord, "async-echo/a1")
    assert (agent.in_flight, agent.status) == (4, AgentStatus.BUSY)  # the fifth waits: no credit
    assert coord.ask(GetTask(handles[4].task_id)).state is TaskState.QUEUED
    for i, f in enumerate(held):
        f.set_result(i)
    assert [h.result(timeout=WAIT) for h in handles] == [0, 1, 2, 3, 4]


def test_an_agent_is_never_sent_more_tasks_than_its_credit(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode, max_concurrent_tasks=2)
    gate = Gate()
    handles = [submit(coord, payload=("gate", gate)) for _ in range(5)]
    agent = info(coord, "echo/e1")
    assert (agent.in_flight, agent.status) == (2, AgentStatus.BUSY)
    assert coord.ask(GetCoordinationStatistics()).tasks.queued == 3
    gate.open()
    assert [h.result(timeout=WAIT) for h in handles] == ["opened"] * 5


def test_an_agent_going_from_a_task_straight_to_a_queued_one_stays_busy(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit)
    agent = spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    probe = actor_testkit.probe()
    coord.ask(WatchRegistry(probe.ref))
    gate = Gate()
    handles = [submit(coord, payload=("gate", gate)) for _ in range(3)]  # one runs, two wait for its slot
    assert coord.ask(GetCoordinationStatistics()).tasks.queued == 2
    gate.open()
    assert [h.result(timeout=WAIT) for h in handles] == ["opened"] * 3
    settle(actor_testkit, coord, agent)
    changes = [m.status_change for m in probe.received() if isinstance(m, RegistryEvent) and m.status_change]
    # The slot each report frees is refilled in the same turn: busy throughout, no idle in between,
    # and the per-agent numbers have no gap.
    assert [(c.old, c.new) for c in changes] == [
        (AgentStatus.IDLE, AgentStatus.BUSY),
        (AgentStatus.BUSY, AgentStatus.IDLE),
    ]
    assert [c.seq for c in changes] == [2, 3]
    assert info(coord, "echo/e1").status_seq == 3


def test_tasks_spread_over_idle_agents_by_load_then_round_robin(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit)
    refs = [spawn_agent(actor_testkit, Echo, f"e{i}", coord, mode=mode, max_concurrent_tasks=2) for i in range(3)]
    gate = Gate()
    handles = [submit(coord, payload=("gate", gate)) for _ in range(3)]
    assert sorted(a.in_flight for a in coord.ask(FindAgents())) == [1, 1, 1]  # least load first
    gate.open()
    for h in handles:
        h.result(timeout=WAIT)
    settle(actor_testkit, coord, *refs)
    agents = {str(coord.ask(GetTask(h.task_id)).agent) for h in handles}
    assert agents == {"echo/e0", "echo/e1", "echo/e2"}


@pytest.mark.parametrize("incapable", [0, 5])
def test_tasks_spread_one_each_over_40_agents_whether_every_agent_or_only_some_are_capable(
    actor_testkit: ActorTestKit, mode: str, incapable: int
) -> None:
    # Above 32 capable agents the ready buckets rank them (not the exact scan), skipping the
    # incapable ones.

    class Other(Echo):
        agent_type = "other"
        capabilities = frozenset({"other"})

    coord = spawn_coordinator(actor_testkit)
    # The incapable first: they head the round robin, so a pick that skipped the subset test would take them.
    refs = [spawn_agent(actor_testkit, Other, f"o{i}", coord, mode=mode) for i in range(incapable)]
    refs += [spawn_agent(actor_testkit, Echo, f"e{i}", coord, mode=mode) for i in range(40)]
    gate = Gate()
    handles = [submit(coord, payload=("gate", gate)) for _ in range(40)]
    loads = {str(a.id): a.in_flight for a in coord.ask(FindAgents())}
    assert loads == {**{f"echo/e{i}": 1 for i in range(40)}, **{f"other/o{i}": 0 for i in range(incapable)}}
    gate.open()
    assert [h.result(timeout=WAIT) for h in handles] == ["opened"] * 40
    settle(actor_testkit, coord, *refs)


def test_a_degraded_agent_gets_work_only_after_the_healthy_ones(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit, health=HealthPolicy(min_outcomes=2, confirmations=1))
    spawn_agent(actor_testkit, Echo, "flaky", coord)
    for _ in range(2):  # two failures: error rate 100 % -> unhealthy
        with pytest.raises(ValueError, match="on purpose"):
            submit(coord, payload=("fail", 9), retry=RetryPolicy(max_attempts=1)).result(timeout=WAIT)
    assert info(coord, "echo/flaky").health is Health.UNHEALTHY
    spawn_agent(actor_testkit, Echo, "good", coord)
    handle = submit(coord, payload="x")
    handle.result(timeout=WAIT)
    assert str(coord.ask(GetTask(handle.task_id)).agent) == "echo/good"


def test_a_task_no_agent_can_take_waits_and_starts_when_a_capable_agent_registers(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    handle = submit(coord, payload="late", requires={"echo", "rare"})
    actor_testkit.advance(3600)  # no timeout: it is never dropped
    assert coord.ask(GetTask(handle.task_id)).state is TaskState.QUEUED

    class Rare(Echo):
        capabilities = frozenset({"echo", "rare"})

    spawn_agent(actor_testkit, Rare, "r1", coord, mode=mode)
    assert handle.result(timeout=WAIT) == "late"


def test_the_schedule_to_start_timeout_names_the_missing_capabilities(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    handle = submit(coord, requires={"echo", "gpu"}, timeouts=Timeouts(schedule_to_start=10))
    actor_testkit.advance(9.9)
    assert coord.ask(GetTask(handle.task_id)).state is TaskState.QUEUED
    actor_testkit.advance(0.1)
    with pytest.raises(TaskTimeoutError, match=r"no registered agent has \['gpu'\].*1 agents registered") as caught:
        handle.result(timeout=WAIT)
    assert caught.value.timeout == "schedule_to_start"
    assert coord.ask(GetTask(handle.task_id)).state is TaskState.TIMED_OUT
    assert submit(coord, payload="still serving").result(timeout=WAIT) == "still serving"


def test_queued_tasks_start_by_priority_and_aging_keeps_low_ones_from_starving(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = spawn_coordinator(actor_testkit, aging=10.0)
    gate = Gate()
    ref = spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    blocker = submit(coord, payload=("gate", gate))
    old_low = submit(coord, payload="old-low", priority=0)
    actor_testkit.advance(25)  # waiting 25 s is worth 2.5 priority levels
    high = submit(coord, payload="high", priority=2)
    higher = submit(coord, payload="higher", priority=5)
    gate.open()
    for h in (blocker, old_low, high, higher):
        h.result(timeout=WAIT)
    order = [t for t, _, _ in ref.ask("seen")]
    assert order == [blocker.task_id, higher.task_id, old_low.task_id, high.task_id]


def test_a_failing_handler_is_retried_with_backoff_on_timer_messages(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit, mode=mode)
    ref = spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    policy = RetryPolicy(initial_delay=1.0, backoff=2.0, max_attempts=3)
    handle = submit(coord, payload=("fail", 2), retry=policy, idempotency_key="k-1")
    settle(actor_testkit, coord, ref)
    assert coord.ask(GetTask(handle.task_id)).state is TaskState.BACKOFF
    actor_testkit.advance(0.99)
    assert coord.ask(GetTask(handle.task_id)).attempt == 1
    actor_testkit.advance(0.01)  # first retry after 1 s
    settle(actor_testkit, coord, ref)
    assert coord.ask(GetTask(handle.task_id)).attempt == 2
    actor_testkit.advance(1.99)
    assert coord.ask(GetTask(handle.task_id)).attempt == 2
    actor_testkit.advance(0.01)  # second retry after 2 s more
    assert handle.result(timeout=WAIT) == ("fail", 2)
    assert ref.ask("seen") == [(handle.task_id, n, "k-1") for n in (1, 2, 3)]
    assert coord.ask(GetCoordinationStatistics()).tasks.retries == 2


def test_after_the_last_attempt_the_caller_gets_the_handlers_exception(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit)
    ref = spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    handle = submit(coord, payload=("fail", 99), retry=RetryPolicy(initial_delay=1, max_attempts=2))
    settle(actor_testkit, coord, ref)  # attempt 1 failed; its retry timer is armed
    actor_testkit.advance(1)
    with pytest.raises(ValueError, match="attempt 2 fails on purpose"):
        handle.result(timeout=WAIT)
    stats = coord.ask(GetCoordinationStatistics())
    assert (stats.tasks.failed, stats.tasks.retries, stats.per_capability["echo"].failed) == (1, 1, 1)


def test_a_non_retryable_error_fails_the_task_at_once(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, Echo, "e1", coord)
    handle = submit(coord, payload=("fail", 1), retry=RetryPolicy(non_retryable=(ValueError,)))
    with pytest.raises(ValueError, match="attempt 1 fails"):
        handle.result(timeout=WAIT)
    assert coord.ask(GetTask(handle.task_id)).attempt == 1


def test_the_retry_policys_delays_grow_to_their_cap() -> None:
    policy = RetryPolicy(initial_delay=1.0, backoff=2.0)
    assert [policy.delay(n) for n in (1, 2, 3, 8, 20)] == [1.0, 2.0, 4.0, 100.0, 100.0]  # cap: 100x initial
    assert RetryPolicy(initial_delay=0.5, max_delay=3).delay(10) == 3
    for bad in (
        {"initial_delay": -1},
        {"initial_delay": float("inf")},
        {"backoff": 0.5},
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"retry_on": (3,)},
    ):
        with pytest.raises(TaskSpecError):
            RetryPolicy(**bad)
    for bad_timeout in (0, -1, float("inf")):
        with pytest.raises(TaskSpecError, match="start_to_close"):
            Timeouts(start_to_close=bad_timeout)


def test_start_to_close_ends_a_slow_attempt_and_the_retry_goes_to_a_free_agent(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, AsyncEcho, "slow", coord, max_concurrent_tasks=1)
    probe = actor_testkit.probe()
    coord.ask(WatchRegistry(probe.ref))

    def status_becomes(status: AgentStatus) -> None:
        probe.fish_for(
            lambda m: isinstance(m, RegistryEvent) and m.status_change is not None and m.status_change.new is status
        )

    retry = RetryPolicy(initial_delay=1, max_attempts=2)
    handle = submit(coord, payload=("forever",), timeouts=Timeouts(start_to_close=5), retry=retry)
    assert coord.ask(GetTask(handle.task_id)).state is TaskState.RUNNING
    actor_testkit.advance(5)  # attempt 1 times out; the agent is told to cancel it
    assert coord.ask(GetTask(handle.task_id)).state is TaskState.BACKOFF
    status_becomes(AgentStatus.IDLE)  # the cancelled handler reported: the slot is back
    actor_testkit.advance(1)
    assert coord.ask(GetTask(handle.task_id)).attempt == 2
    actor_testkit.advance(5)
    with pytest.raises(TaskTimeoutError, match="start_to_close timeout of 5") as caught:
        handle.result(timeout=WAIT)
    assert caught.value.timeout == "start_to_close"


def test_start_to_close_times_out_a_blocked_plain_handler_and_the_late_result_is_dropped(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    class Mover(Echo):
        def handle_task(self, task: Any) -> Any:
            return ("moved", task.attempt)

    coord = spawn_coordinator(actor_testkit)
    gate = Gate()
    slow = spawn_agent(actor_testkit, Echo, "slow", coord, mode=mode)
    retry = RetryPolicy(initial_delay=1, max_attempts=2)
    handle = submit(coord, payload=("gate", gate), timeouts=Timeouts(start_to_close=5), retry=retry)
    assert gate.entered.wait(WAIT)
    # (pooled: in asyncio mode the blocked handler holds the loop, and every actor on it)
    spawn_agent(actor_testkit, Mover, "free", coord)
    actor_testkit.advance(5)
    assert coord.ask(GetTask(handle.task_id)).state is TaskState.BACKOFF
    actor_testkit.advance(1)  # the retry goes to the free agent: the slow one still holds its slot
    assert handle.result(timeout=WAIT) == ("moved", 2)
    gate.open()
    settle(actor_testkit, coord, slow)
    assert coord.ask(GetTask(handle.task_id)).result == ("moved", 2)  # attempt 1's late "opened" is dropped
    assert info(coord, "echo/slow").in_flight == 0


def test_a_hung_task_is_caught_by_its_heartbeat_timeout_and_progress_keeps_it_alive(
    actor_testkit: ActorTestKit,
) -> None:
    class Reporter(AsyncEcho):
        async def handle_task(self, task: Any) -> Any:
            if task.payload[0] == "steps":
                _, steps, probe = task.payload
                for i, step in enumerate(steps):
                    await asyncio.wrap_future(step)
                    self.report_progress(i)
                    probe.tell(i)  # after the progress: once the probe has it, so has the coordinator's mailbox
                return "done"
            return await super().handle_task(task)

    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, Reporter, "r1", coord)
    probe = actor_testkit.probe()
    steps: list[concurrent.futures.Future[Any]] = [concurrent.futures.Future() for _ in range(2)]
    hung = submit(coord, payload=("forever",), timeouts=Timeouts(heartbeat=3), retry=RetryPolicy(max_attempts=1))
    alive = submit(coord, payload=("steps", steps, probe.ref), timeouts=Timeouts(heartbeat=3))
    for i, step in enumerate(steps):
        actor_testkit.advance(2)
        step.set_result(None)
        probe.expect_message(i)
        state = coord.ask(GetTask(alive.task_id))
        assert (state.state, state.attempt) in ((TaskState.RUNNING, 1), (TaskState.COMPLETED, 1))
    with pytest.raises(TaskTimeoutError, match="heartbeat timeout of 3") as caught:
        hung.result(timeout=WAIT)
    assert caught.value.timeout == "heartbeat"
    assert alive.result(timeout=WAIT) == "done"
    assert coord.ask(GetTask(alive.task_id)).attempt == 1


def test_schedule_to_close_bounds_all_attempts_together(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit)
    ref = spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    handle = submit(
        coord,
        payload=("fail", 99),
        retry=RetryPolicy(initial_delay=4, max_attempts=None),
        timeouts=Timeouts(schedule_to_close=10),
    )
    settle(actor_testkit, coord, ref)
    actor_testkit.advance(4)
    settle(actor_testkit, coord, ref)
    assert coord.ask(GetTask(handle.task_id)).attempt == 2
    actor_testkit.advance(6)
    with pytest.raises(TaskTimeoutError, match="schedule_to_close") as caught:
        handle.result(timeout=WAIT)
    assert caught.value.timeout == "schedule_to_close"


def test_tasks_in_flight_on_an_agent_that_stops_are_reassigned_with_the_next_attempt(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = spawn_coordinator(actor_testkit)
    doomed = spawn_agent(actor_testkit, AsyncEcho, "doomed", coord)
    held: concurrent.futures.Future[Any] = concurrent.futures.Future()
    handle = submit(coord, payload=("hold", held), idempotency_key="job-7")
    assert str(coord.ask(GetTask(handle.task_id)).agent) == "async-echo/doomed"
    survivor = spawn_agent(actor_testkit, Echo, "survivor", coord, mode=mode)
    doomed.stop()  # its handler is cancelled mid-await; the attempt is lost
    assert handle.result(timeout=WAIT) == ("hold", held)  # Echo returns the payload
    assert survivor.ask("seen") == [(handle.task_id, 2, "job-7")]
    assert coord.ask(GetCoordinationStatistics()).tasks.reassignments == 1


def test_an_agent_silent_past_its_heartbeat_timeout_goes_offline_and_its_tasks_move(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = spawn_coordinator(actor_testkit)
    gate = Gate()
    stuck = spawn_agent(actor_testkit, Echo, "stuck", coord, mode=mode, heartbeat_interval=10)
    handle = submit(coord, payload=("gate", gate))
    assert gate.entered.wait(WAIT)  # its handler blocks: no heartbeat gets through its mailbox
    probe = actor_testkit.probe()
    coord.ask(WatchRegistry(probe.ref))

    class Mover(Echo):
        def handle_task(self, task: Any) -> Any:
            return ("moved", task.attempt)

    # (pooled: in asyncio mode the stuck handler holds the loop, and every actor on it)
    free = spawn_agent(actor_testkit, Mover, "free", coord, heartbeat_interval=10)
    for _ in range(19):
        actor_testkit.advance(1)
        settle(actor_testkit, coord, free)
    assert info(coord, "echo/stuck").status is AgentStatus.BUSY  # 19 s of silence < 20 s timeout
    actor_testkit.advance(1)
    settle(actor_testkit, coord, free)
    assert info(coord, "echo/stuck").status is AgentStatus.OFFLINE
    assert handle.result(timeout=WAIT) == ("moved", 2)  # reassigned to "free"
    offline = probe.fish_for(
        lambda m: (
            isinstance(m, RegistryEvent)
            and m.kind is RegistryEventKind.STATUS
            and m.status_change is not None
            and m.status_change.new is AgentStatus.OFFLINE
        )
    )
    assert str(offline.agent.id) == "echo/stuck"
    gate.open()  # it comes back: its late result is dropped, and it is heard again
    actor_testkit.advance(10)
    settle(actor_testkit, coord, stuck, free)
    assert info(coord, "echo/stuck").status is AgentStatus.IDLE


def test_heartbeats_keep_an_idle_agent_online_indefinitely(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit)
    ref = spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    beat(actor_testkit, coord, [ref], seconds=300, step=15)  # default 30 s beats, 60 s timeout
    assert info(coord, "echo/e1").status is AgentStatus.IDLE
    assert info(coord, "echo/e1").last_heard == 300


def test_cancelling_a_queued_task_means_it_never_starts(actor_testkit: ActorTestKit, mode: str) -> None:
    coord = spawn_coordinator(actor_testkit)
    ref = spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    gate = Gate()
    blocker = submit(coord, payload=("gate", gate))
    queued = submit(coord, payload="never")
    assert coord.ask(CancelTask(queued.task_id)) is True
    assert coord.ask(CancelTask(queued.task_id)) is False
    with pytest.raises(TaskCancelledError):
        queued.result(timeout=WAIT)
    gate.open()
    blocker.result(timeout=WAIT)
    settle(actor_testkit, coord, ref)
    assert [t for t, _, _ in ref.ask("seen")] == [blocker.task_id]


def test_cancelling_a_running_async_task_cancels_its_handler(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    spawn_agent(actor_testkit, AsyncEcho, "a1", coord, max_concurrent_tasks=1)
    running = submit(coord, payload=("forever",))
    after = submit(coord, payload="next")
    assert coord.ask(CancelTask(running.task_id)) is True
    with pytest.raises(TaskCancelledError):
        running.result(timeout=WAIT)
    assert after.result(timeout=WAIT) == "next"  # the slot came back once the handler was cancelled


def test_a_second_submission_with_the_same_idempotency_key_gets_the_first_handle(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    first = submit(coord, payload=1, idempotency_key="once")
    second = submit(coord, payload=2, idempotency_key="once")
    assert first.task_id == second.task_id


def test_submit_task_tells_the_submission_and_its_errors_reach_the_handle(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = spawn_coordinator(actor_testkit, mode=mode)
    spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    handle = submit_task(coord, TaskSpec("echo", "told", requires={"echo"}))
    assert handle.result(timeout=WAIT) == "told"
    assert coord.ask(GetTask(handle.task_id)).state is TaskState.COMPLETED
    bad = submit_task(coord, "not a spec")  # type: ignore[arg-type]
    with pytest.raises(TaskSpecError):
        bad.result(timeout=WAIT)
    first = submit_task(coord, TaskSpec("echo", 1, requires={"echo"}, idempotency_key="same"))
    again = submit_task(coord, TaskSpec("echo", 2, requires={"echo"}, idempotency_key="same"))
    assert first.result(timeout=WAIT) == again.result(timeout=WAIT) == 1  # the repeat follows the first
    coord.stop()
    with pytest.raises(pykka.ActorDeadError):
        submit_task(coord, TaskSpec("echo")).result(timeout=WAIT)


def test_the_coordinator_remembers_only_the_most_recent_finished_tasks(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit, keep_finished=2)
    spawn_agent(actor_testkit, Echo, "e1", coord)
    handles = [submit(coord, payload=i, idempotency_key=f"k{i}") for i in range(3)]
    assert [h.result(timeout=WAIT) for h in handles] == [0, 1, 2]
    with pytest.raises(UnknownTaskError):
        coord.ask(GetTask(handles[0].task_id))
    assert coord.ask(GetTask(handles[2].task_id)).state is TaskState.COMPLETED
    assert submit(coord, payload="again", idempotency_key="k0").task_id != handles[0].task_id  # forgotten key


def test_plain_and_keyed_finished_tasks_are_remembered_and_forgotten_in_finishing_order(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    coord = spawn_coordinator(actor_testkit, keep_finished=3, mode=mode)
    spawn_agent(actor_testkit, Echo, "e1", coord, mode=mode)
    handles = []
    for i in range(5):  # plain, keyed, plain, keyed, plain: one agent, so they finish in this order
        handle = submit(coord, payload=i, **({"idempotency_key": f"k{i}"} if i % 2 else {}))
        assert handle.result(timeout=WAIT) == i
        handles.append(handle)
    for forgotten in handles[:2]:
        with pytest.raises(UnknownTaskError):
            coord.ask(GetTask(forgotten.task_id))
    infos = [coord.ask(GetTask(h.task_id)) for h in handles[2:]]
    assert [(t.task_id, t.kind, t.state, t.attempt, t.result, t.error) for t in infos] == [
        (h.task_id, "echo", TaskState.COMPLETED, 1, i, None) for i, h in enumerate(handles[2:], start=2)
    ]
    assert all(t.agent == AgentId("echo", "e1") for t in infos)
    assert all(t.submitted_at <= t.started_at <= t.finished_at for t in infos)
    assert coord.ask(CancelTask(handles[4].task_id)) is False  # finished: nothing to cancel
    reused: Future[Any] = Future()
    coord.tell(Submit(TaskSpec("echo", requires={"echo"}), reused, handles[4].task_id))
    with pytest.raises(TaskSpecError, match="already has a task"):  # a remembered id is not reused
        reused.get(timeout=WAIT)
    assert submit(coord, payload="again", idempotency_key="k1").task_id != handles[1].task_id  # forgotten key
    assert submit(coord, payload="same", idempotency_key="k3").task_id == handles[3].task_id  # remembered key


def test_results_can_be_written_to_a_store_key(actor_testkit: ActorTestKit) -> None:
    store = actor_testkit.spawn(StateStore)
    coord = spawn_coordinator(actor_testkit, result_writer=lambda key, value: store.tell(SetEntry(key, value)))
    spawn_agent(actor_testkit, Echo, "e1", coord)
    submit(coord, payload="kept", result_key="results/t1").result(timeout=WAIT)
    assert store.ask(GetEntry("results/t1")).value == "kept"


def test_bad_requests_get_errors_and_bad_notifications_become_dead_letters(
    actor_testkit: ActorTestKit, logs: Any
) -> None:
    coord = spawn_coordinator(actor_testkit)
    with pytest.raises(UnknownTaskError, match="no task 'nope'"):
        coord.ask(GetTask("nope"))
    with pytest.raises(TaskSpecError):
        coord.ask(Submit("not a spec"))  # type: ignore[arg-type]
    coord.tell("gibberish")
    coord.tell(TaskFinished("echo/x", "t", 1))  # type: ignore[arg-type]  # an unknown agent's result: ignored
    spawn_agent(actor_testkit, Echo, "e1", coord)
    assert submit(coord, payload="served").result(timeout=WAIT) == "served"
    letters = actor_testkit.system.dead_letters.recent()
    assert [letter.message for letter in letters] == ["gibberish"]
    assert any("rejected told message 'gibberish'" in m for m in logs.messages())


def test_every_unfinished_task_fails_when_the_coordinator_stops(mode: str) -> None:
    with ActorSystem("stopping", clock=ManualClock(), dispatchers=2) as system:
        coord = system.spawn(Coordinator)
        handle = coord.ask(Submit(TaskSpec("x", requires={"nobody"})))
        coord.stop()
        with pytest.raises(CoordinationStoppedError, match="stopped before task"):
            handle.result(timeout=WAIT)
        with pytest.raises(pykka.ActorDeadError):
            coord.ask(GetCoordinationStatistics())


def test_statistics_report_agents_by_status_and_tasks_per_capability(actor_testkit: ActorTestKit) -> None:
    coord = spawn_coordinator(actor_testkit)
    ref = spawn_agent(actor_testkit, Echo, "e1", coord)
    for i in range(3):
        submit(coord, payload=i).result(timeout=WAIT)
    settle(actor_testkit, coord, ref)
    stats = coord.ask(GetCoordinationStatistics())
    assert stats.agents == 1
    assert dict(stats.by_status) == {"idle": 1}
    assert dict(stats.by_health) == {"healthy": 1}
    echo = stats.per_capability["echo"]
    assert (echo.submitted, echo.completed, echo.queued, echo.running) == (3, 3, 0, 0)
    assert echo.completion_rate == 1.0
    assert echo.wait_p95 is not None
    assert echo.run_p50 is not None


def test_statistics_add_up_tasks_of_different_capability_sets_overall_and_per_capability(
    actor_testkit: ActorTestKit,
) -> None:
    coord = spawn_coordinator(actor_testkit)
    ref = spawn_agent(actor_testkit, Echo, "e1", coord, capabilities={"echo", "fast"})
    for requires in ({"echo"}, {"echo", "fast"}, {"fast"}, set(), {"echo"}):
        submit(coord, requires=requires).result(timeout=WAIT)
    failing = submit(coord, payload=("fail", 1), requires={"fast"}, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ValueError, match="fails on purpose"):
        failing.result(timeout=WAIT)
    settle(actor_testkit, coord, ref)
    stats = coord.ask(GetCoordinationStatistics())
    overall, per_cap = stats.tasks, stats.per_capability
    assert (overall.submitted, overall.completed, overall.failed, overall.running) == (6, 5, 1, 0)
    assert sorted(per_cap) == ["echo", "fast"]
    assert (per_cap["echo"].submitted, per_cap["echo"].completed, per_cap["echo"].failed) == (3, 3, 0)
    assert (per_cap["fast"].submitted, per_cap["fast"].completed, per_cap["fast"].failed) == (3, 2, 1)
    assert per_cap["fast"].completion_rate == pytest.approx(2 / 3)
    assert overall.run_p95 is not None
    assert per_cap["echo"].wait_p50 is not None


# -- reports told behind one another: handled in one turn (`Coordinator._on_finished_batch`) ---------


class _Hold:
    """A result writer that holds the coordinator's turn on the ``"hold"`` key until the test lets it go."""

    def __init__(self) -> None:
        self.gate = Gate()

    def __call__(self, key: str, _value: Any) -> None:
        if key == "hold":
            self.gate.wait()


def _fake_agents(
    kit: ActorTestKit, coord: Any, caps: dict[str, set[str]], max_concurrent_tasks: int = 1
) -> dict[str, Any]:
    """Register a probe per key as agent ``fake/<key>``: the test reads its RunTasks and reports for it."""
    probes = {}
    for key, held in caps.items():
        probe = kit.probe()
        coord.ask(Register(probe.ref, AgentDescriptor(f"fake/{key}", held, max_concurrent_tasks=max_concurrent_tasks)))
        probes[key] = probe
    return probes


def _run(probe: Any) -> Task:
    return probe.expect_message(RunTask, timeout=WAIT).task  # type: ignore[no-any-return]


def _report(coord: Any, key: str, task: Task, value: Any) -> None:
    coord.tell(TaskFinished(AgentId("fake", key), task.task_id, task.attempt, value))


def _hold_the_coordinator(coord: Any, hold: _Hold, probe: Any) -> Any:
    """Finish a task whose result write blocks: the coordinator's turn waits in it, and its mailbox fills behind.

    Return the held task's handle.
    """
    handle = submit(coord, payload="held", requires={"hold"}, result_key="hold")
    _report(coord, "holder", _run(probe), "held")
    assert hold.gate.entered.wait(WAIT)
    return handle


def test_reports_queued_with_a_bad_one_and_an_ask_between_them_are_all_handled_in_order(
    actor_testkit: ActorTestKit, mode: str, logs: Any
) -> None:
    hold = _Hold()
    coord = spawn_coordinator(actor_testkit, mode=mode, result_writer=hold)
    probes = _fake_agents(actor_testkit, coord, {"holder": {"hold"}, "a": {"echo"}, "b": {"echo"}})
    handles = [submit(coord, payload=i) for i in range(3)]  # the third waits for a slot
    tasks = {key: _run(probes[key]) for key in ("a", "b")}
    assert coord.ask(GetCoordinationStatistics()).tasks.queued == 1
    held = _hold_the_coordinator(coord, hold, probes["holder"])
    # Behind the held turn: a report, a bad one, an ask, a report.
    _report(coord, "a", tasks["a"], "from a")
    bad = TaskFinished(AgentId("fake", "a"), ["not", "an", "id"], 1)  # type: ignore[arg-type]  # unhashable: raises
    coord.tell(bad)
    late = coord.ask(Submit(TaskSpec("echo", 3, requires={"echo"})), block=False)
    _report(coord, "b", tasks["b"], "from b")
    hold.gate.open()
    assert held.result(timeout=WAIT) == "held"
    by_id = {tasks["a"].task_id: "from a", tasks["b"].task_id: "from b"}
    assert [h.result(timeout=WAIT) for h in handles[:2]] == [by_id[h.task_id] for h in handles[:2]]
    # The queued task went to the slot a's report freed, before the ask behind it was handled:
    # the take stopped at the ask, which then took the slot b's report freed.
    third, fourth = _run(probes["a"]), _run(probes["b"])
    assert (third.task_id, fourth.task_id) == (handles[2].task_id, late.get(timeout=WAIT).task_id)
    _report(coord, "a", third, "third")
    _report(coord, "b", fourth, "fourth")
    assert handles[2].result(timeout=WAIT) == "third"
    assert late.get(timeout=WAIT).result(timeout=WAIT) == "fourth"
    letters = [d for d in actor_testkit.system.dead_letters.recent() if d.message is bad]
    assert [d.reason for d in letters] == [DeadLetterReason.HANDLER_FAILED]
    assert coord.ask(GetCoordinationStatistics()).tasks.completed == 5


def test_an_agent_that_stops_behind_its_own_reports_keeps_them_and_its_lost_attempt_is_reassigned(
    actor_testkit: ActorTestKit, mode: str
) -> None:
    hold = _Hold()
    coord = spawn_coordinator(actor_testkit, mode=mode, result_writer=hold)
    probes = _fake_agents(actor_testkit, coord, {"holder": {"hold"}, "a": {"echo"}, "b": {"echo"}}, 2)
    handles = [submit(coord, payload=i) for i in range(4)]  # two slots each
    runs = {key: [_run(probes[key]), _run(probes[key])] for key in ("a", "b")}
    _hold_the_coordinator(coord, hold, probes["holder"])
    # Behind the held turn: both of a's reports, one of b's, then b stops with its other attempt in flight.
    for task in runs["a"]:
        _report(coord, "a", task, f"a:{task.task_id}")
    kept, lost = runs["b"]
    _report(coord, "b", kept, "b kept")
    probes["b"].ref.stop()
    hold.gate.open()
    retry = _run(probes["a"])  # the lost attempt, again, on the agent that is left
    assert (retry.task_id, retry.attempt, retry.idempotency_key) == (lost.task_id, 2, lost.idempotency_key)
    _report(coord, "a", retry, "retried")
    results = {h.task_id: h.result(timeout=WAIT) for h in handles}
    assert results == {
        **{t.task_id: f"a:{t.task_id}" for t in runs["a"]},
        kept.task_id: "b kept",
        lost.task_id: "retried",
    }
    assert coord.ask(GetTask(kept.task_id)).attempt == 1
    stats = coord.ask(GetCoordinationStatistics())
    assert (stats.tasks.completed, stats.tasks.reassignments, stats.agents) == (5, 1, 2)


def test_submits_told_behind_one_another_each_get_their_answer_and_a_bad_one_stops_nothing(
    actor_testkit: ActorTestKit, mode: str, logs: Any
) -> None:
    hold = _Hold()
    coord = spawn_coordinator(actor_testkit, mode=mode, result_writer=hold)
    probes = _fake_agents(actor_testkit, coord, {"holder": {"hold"}, "a": {"echo"}}, 2)
    held = _hold_the_coordinator(coord, hold, probes["holder"])
    # Behind the held turn, all told: a good one, a bad one with its own future, a bad one
    # without, then two with one idempotency key.
    first = submit_task(coord, TaskSpec("echo", 1, requires={"echo"}))
    refused = submit_task(coord, "not a spec")  # type: ignore[arg-type]
    bare = Submit("not a spec either")  # type: ignore[arg-type]
    coord.tell(bare)
    keyed = [submit_task(coord, TaskSpec("echo", 2, requires={"echo"}, idempotency_key="k")) for _ in range(2)]
    hold.gate.open()
    assert held.result(timeout=WAIT) == "held"
    with pytest.raises(TaskSpecError, match="needs a TaskSpec"):
        refused.result(timeout=WAIT)
    runs = [_run(probes["a"]), _run(probes["a"])]  # the first and the keyed one, once
    assert [t.task_id for t in runs] == [first.task_id, keyed[0].task_id]
    for task in runs:
        _report(coord, "a", task, f"done {task.payload}")
    assert first.result(timeout=WAIT) == "done 1"
    assert [h.result(timeout=WAIT) for h in keyed] == ["done 2", "done 2"]
    letters = [d for d in actor_testkit.system.dead_letters.recent() if d.message is bare]
    assert [d.reason for d in letters] == [DeadLetterReason.REJECTED]
    probes["a"].expect_no_message()


@pytest.mark.parametrize("incapable", [0, 5])
def test_above_32_capable_agents_the_lowest_run_time_among_the_first_8_ready_wins_then_round_robin(
    actor_testkit: ActorTestKit, mode: str, incapable: int
) -> None:
    coord = spawn_coordinator(actor_testkit, mode=mode)
    probes = _fake_agents(actor_testkit, coord, {f"o{i}": {"other"} for i in range(incapable)})
    probes |= _fake_agents(actor_testkit, coord, {f"e{i}": {"echo"} for i in range(40)})
    handles = [submit(coord, payload=i) for i in range(40)]  # one each
    runs = {key: _run(probes[key]) for key in probes if key.startswith("e")}
    for key, task in runs.items():  # back in this order: e0 first in the round robin, e5 the fastest
        coord.tell(TaskFinished(AgentId("fake", key), task.task_id, 1, None, None, 0.1 if key == "e5" else 1.0))
    assert [h.result(timeout=WAIT) for h in handles] == [None] * 40
    fast = submit(coord, payload="fast")
    assert _run(probes["e5"]).task_id == fast.task_id
    head = submit(coord, payload="head")  # e5 is busy: the rest of the first 8 tie, the first wins
    assert _run(probes["e0"]).task_id == head.task_id
