"""Pools in every execution mode: lifecycle on the injected clock, limits, crashes, statistics, draining.

No test sleeps. A routee is kept busy by a `Gate` it holds until the test
releases it; maintenance, idle eviction, creation timeouts and drain
timeouts fire when the test advances the `ManualClock`; the pool's state is
read with asks, which its mailbox answers after everything queued before.
Tests that hold several routees at once run on a system with enough
dispatcher threads for every held routee plus the pool itself.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pykka import ActorDeadError

from actors import (
    Actor,
    ActorSystem,
    AwaitStarted,
    Broadcast,
    ChildSpec,
    Decider,
    Drain,
    DrainResult,
    GetStatistics,
    ManualClock,
    Pool,
    PoolConfig,
    PoolExhaustedError,
    PoolStatistics,
    Resizer,
    RouteeStartError,
    StrategyError,
    SupervisionPolicy,
    Terminated,
)
from tests.core.actors_for_tests import WAIT, Gate

if TYPE_CHECKING:
    from collections.abc import Iterator


class Crash(Exception):
    pass


class Agent(Actor):
    """Replies ``(urn, message, handled so far)``; holds a `Gate`; ``"crash"`` raises `Crash`."""

    def __init__(self) -> None:
        super().__init__()
        self.handled = 0

    def on_receive(self, message: Any) -> Any:
        self.handled += 1
        if isinstance(message, Gate):
            return message.hold_then(lambda: (self.actor_urn, message, self.handled))
        if message == "crash":
            msg = "crashed on purpose"
            raise Crash(msg)
        return (self.actor_urn, message, self.handled)


class SlowStart(Actor):
    """An agent whose ``on_start`` waits for a gate."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    def on_start(self) -> Any:
        return self.gate.hold_then(lambda: None)

    def on_receive(self, message: Any) -> Any:
        return message


class Unbuildable(Actor):
    def __init__(self) -> None:
        super().__init__()
        msg = "no API key"
        raise RuntimeError(msg)


class ObservedPool(Pool):
    """A pool that tells the test when it has lost a routee."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = threading.Event()

    def on_routee_terminated(self, message: Terminated) -> None:
        super().on_routee_terminated(message)
        self.lost.set()


@pytest.fixture
def roomy(clock: ManualClock) -> Iterator[ActorSystem]:
    """A system whose dispatchers outnumber the routees a test holds at gates."""
    with ActorSystem("pool-test", clock=clock, dispatchers=6) as system:
        yield system


def spawn_pool(system: ActorSystem, mode: str, factory: Any = Agent, **config: Any) -> Any:
    spec = factory if isinstance(factory, ChildSpec) else ChildSpec(factory, mode=mode)
    pool = system.spawn(Pool, spec, config=PoolConfig(**config), mode=mode)
    pool.ask(AwaitStarted())
    return pool


def hold(pool: Any) -> tuple[Gate, Any]:
    """Send a gate through the pool and wait until a routee holds it."""
    gate = Gate()
    reply = pool.ask(gate, block=False)
    gate.wait_entered()
    return gate, reply


def stats(pool: Any) -> PoolStatistics:
    statistics = pool.ask(GetStatistics(), timeout=WAIT)
    assert isinstance(statistics, PoolStatistics)
    return statistics


# -- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"min_size": 3, "max_size": 2}, ValueError, r"max_size \(2\) must be >= min_size \(3\)"),
        ({"max_size": 0}, ValueError, "max_size must be an int >= 1"),
        ({"min_size": -1}, ValueError, "min_size must be an int >= 0"),
        ({"max_concurrent": 0}, ValueError, "max_concurrent must be an int >= 1"),
        ({"max_idle": 0}, ValueError, "max_idle must be > 0"),
        ({"maintenance_interval": -5}, ValueError, "maintenance_interval must be > 0"),
        ({"creation_timeout": 0}, ValueError, "creation_timeout must be > 0"),
        ({"overflow": "drop"}, ValueError, "overflow"),
        ({"strategy": "fastest"}, StrategyError, "unknown routing strategy"),
        ({"strategy": "broadcast"}, StrategyError, "fans out"),
        ({"strategy": "scatter_gather_first"}, StrategyError, "Broadcast"),
        ({"resizer": "yes"}, TypeError, "resizer"),
    ],
)
def test_a_pool_config_refuses_bad_values_with_what_to_fix(fields: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PoolConfig(**fields)


def test_a_pool_refuses_a_named_factory(system: ActorSystem) -> None:
    with pytest.raises(ValueError, match="must not have a name"):
        system.spawn(Pool, ChildSpec(Agent, name="solo"))
    with pytest.raises(TypeError, match="ChildSpec or an actor class"):
        system.spawn(Pool, "Agent")


# -- warm-up and growth ---------------------------------------------------------------------------------


def test_a_pool_warms_up_to_its_min_size_as_its_children(system: ActorSystem, mode: str) -> None:
    pool = spawn_pool(system, mode, min_size=3, max_size=5)
    started = stats(pool)
    assert (started.size, started.starting, started.created) == (3, 0, 3)
    refs = [r.ref for r in started.routees]
    assert len({r.actor_urn for r in refs}) == 3
    pool.stop()
    assert not any(ref.is_alive() for ref in refs)  # they were the pool's children


def test_without_warm_up_a_pool_creates_its_first_routee_on_demand(system: ActorSystem, mode: str) -> None:
    pool = spawn_pool(system, mode, min_size=2, max_size=4, warm_up=False)
    assert stats(pool).size == 0
    assert pool.ask("first")[1:] == ("first", 1)
    after = stats(pool)
    assert (after.size, after.created, after.hit_rate) == (1, 1, 0.0)


def test_a_pool_grows_on_demand_when_every_routee_is_full(roomy: ActorSystem, mode: str) -> None:
    pool = spawn_pool(roomy, mode, min_size=1, max_size=3)
    gate, held = hold(pool)
    try:
        first = stats(pool).routees[0].ref
        urn, message, _ = pool.ask("next", timeout=WAIT)  # waits for a routee grown for it
        assert (urn != first.actor_urn, message) == (True, "next")
        grown = stats(pool)
        assert (grown.size, grown.created, grown.busy) == (2, 2, 1)
        assert grown.hit_rate == 0.5  # the gate found room at once, "next" waited for its routee
    finally:
        gate.released.set()
    assert held.get(timeout=WAIT)[0] == first.actor_urn


def test_a_full_pool_at_max_size_refuses_with_its_name_and_limits(roomy: ActorSystem, mode: str) -> None:
    pool = spawn_pool(roomy, mode, min_size=1, max_size=2, max_concurrent=1)
    (gate_a, held_a), (gate_b, held_b) = hold(pool), hold(pool)
    try:
        with pytest.raises(PoolExhaustedError) as refused:
            pool.ask("one too many")
        text = str(refused.value)
        assert str(pool) in text
        assert "all 2 routees (max_size 2) have max_concurrent=1 messages in flight" in text
        assert "overflow='queue'" in text
        with pytest.raises(PoolExhaustedError):
            pool.tell("told too")
        assert stats(pool).refused == 2
    finally:
        gate_a.released.set()
        gate_b.released.set()
    held_a.get(timeout=WAIT)
    held_b.get(timeout=WAIT)
    assert pool.ask("room again")[1] == "room again"


def test_a_full_pool_with_a_queue_keeps_messages_in_order_up_to_its_capacity(roomy: ActorSystem, mode: str) -> None:
    pool = spawn_pool(roomy, mode, min_size=1, max_size=1, overflow="queue", queue_capacity=2)
    gate, held = hold(pool)
    try:
        waiting = [pool.ask(f"queued-{i}", block=False) for i in range(2)]
        with pytest.raises(PoolExhaustedError, match=r"queue is full \(queue_capacity=2\)"):
            pool.ask("third")
        assert stats(pool).waiting == 2
    finally:
        gate.released.set()
    held.get(timeout=WAIT)
    assert [w.get(timeout=WAIT)[1:] for w in waiting] == [("queued-0", 2), ("queued-1", 3)]
    assert stats(pool).waiting == 0


def test_max_concurrent_lets_messages_wait_in_the_routees_mailbox(roomy: ActorSystem, mode: str) -> None:
    pool = spawn_pool(roomy, mode, min_size=1, max_size=1, max_concurrent=3)
    gate, _held = hold(pool)
    try:
        behind = [pool.ask(i, block=False) for i in range(2)]  # room for 2 more on the same routee
        with pytest.raises(PoolExhaustedError):
            pool.ask("a fourth")
        (routee,) = stats(pool).routees
        assert (routee.active, routee.queue_length) == (3, 2)
    finally:
        gate.released.set()
    assert [b.get(timeout=WAIT)[1] for b in behind] == [0, 1]


# -- maintenance: idle eviction and the resizer --------------------------------------------------------


def test_idle_routees_are_evicted_after_max_idle_but_never_below_min_size(
    roomy: ActorSystem, clock: ManualClock, mode: str
) -> None:
    pool = spawn_pool(roomy, mode, min_size=1, max_size=3, max_idle=10.0, maintenance_interval=5.0)
    gates = [hold(pool) for _ in range(3)]
    assert stats(pool).size == 3
    for gate, reply in gates:
        gate.released.set()
        reply.get(timeout=WAIT)
    clock.advance(5.0)
    assert stats(pool).size == 3  # idle for 5 s only
    clock.advance(5.0)
    evicted = stats(pool)
    assert (evicted.size, evicted.destroyed) == (1, 2)
    clock.advance(100.0)
    assert stats(pool).size == 1  # min_size stays
    assert pool.ask("still serving")[1] == "still serving"


def test_a_routee_in_use_is_not_evicted(roomy: ActorSystem, clock: ManualClock, mode: str) -> None:
    pool = spawn_pool(roomy, mode, min_size=0, max_size=2, max_idle=10.0, maintenance_interval=10.0)
    gate, held = hold(pool)
    try:
        clock.advance(30.0)
        assert stats(pool).size == 1  # busy for 30 s, not idle
    finally:
        gate.released.set()
    held.get(timeout=WAIT)
    clock.advance(10.0)
    assert stats(pool).size == 0


def test_the_resizer_grows_under_pressure_and_shrinks_when_idle(
    roomy: ActorSystem, clock: ManualClock, mode: str
) -> None:
    resizer = Resizer(rampup_rate=1.0, backoff_threshold=0.5, backoff_rate=0.5)
    pool = spawn_pool(roomy, mode, min_size=1, max_size=4, max_idle=None, maintenance_interval=1.0, resizer=resizer)
    gate, held = hold(pool)
    try:
        clock.advance(1.0)  # 1 of 1 busy: grow by ceil(1.0 * 1)
        assert pool.ask(AwaitStarted()).size == 2
    finally:
        gate.released.set()
    held.get(timeout=WAIT)
    clock.advance(1.0)  # 0 of 2 busy: shrink by ceil(0.5 * 2)
    shrunk = stats(pool)
    assert (shrunk.size, shrunk.destroyed) == (1, 1)
    clock.advance(1.0)
    assert stats(pool).size == 1  # never below min_size


@given(size=st.integers(0, 200), busy_fraction=st.floats(0, 1), resizer=st.builds(Resizer))
def test_the_resizer_grows_only_when_all_are_busy_and_shrinks_only_under_its_threshold(
    size: int, busy_fraction: float, resizer: Resizer
) -> None:
    busy = round(size * busy_fraction)
    change = resizer.capacity_change(size, busy)
    if size and busy >= size:
        assert change >= (1 if resizer.rampup_rate > 0 else 0)
    elif size and busy / size < resizer.backoff_threshold and resizer.backoff_rate > 0:
        assert -size <= change < 0
    else:
        assert change == 0


# -- crashes and creation failures ------------------------------------------------------------------------


def test_a_routee_that_crashes_is_restarted_in_place_and_the_pool_keeps_serving(system: ActorSystem, mode: str) -> None:
    pool = spawn_pool(system, mode, min_size=1, max_size=1, max_concurrent=2)
    urn, _, handled = pool.ask("warm")
    assert handled == 1
    pool.tell("crash")  # a tell whose handler raises fails the routee; the pool restarts it
    assert pool.ask("after") == (urn, "after", 1)  # same address, fresh instance, mail kept
    after = stats(pool)
    assert (after.size, after.destroyed, after.processed, after.failed) == (1, 0, 3, 1)


def test_the_ask_running_on_a_crashing_routee_gets_the_error(system: ActorSystem, mode: str) -> None:
    policy = SupervisionPolicy(max_restarts=5, within_seconds=60, decider=Decider(ask_failures=(Crash,)))
    pool = spawn_pool(system, mode, min_size=1, max_size=1, supervision=policy)
    urn, _, _ = pool.ask("warm")
    with pytest.raises(Crash, match="crashed on purpose"):
        pool.ask("crash")
    assert pool.ask("after") == (urn, "after", 1)  # restarted: the count starts again


def test_a_routee_that_terminates_is_replaced_to_keep_min_size(system: ActorSystem, mode: str) -> None:
    pool = system.spawn(ObservedPool, ChildSpec(Agent, mode=mode), config=PoolConfig(min_size=2), mode=mode)
    before = pool.ask(AwaitStarted())
    before.routees[0].ref.stop()
    assert pool.proxy().lost.get(timeout=WAIT).wait(WAIT)
    after = pool.ask(AwaitStarted())
    assert (after.size, after.created, after.destroyed) == (2, 3, 1)
    assert before.routees[0].ref not in {r.ref for r in after.routees}


def test_a_routee_that_does_not_start_in_time_fails_the_messages_waiting_for_it(
    roomy: ActorSystem, clock: ManualClock, mode: str
) -> None:
    gate = Gate()
    spec = ChildSpec(SlowStart, args=(gate,), mode=mode)
    pool = roomy.spawn(Pool, spec, config=PoolConfig(min_size=1, creation_timeout=5.0), mode=mode)
    try:
        waiting = pool.ask("hello", block=False)
        gate.wait_entered()
        # The pool arms the creation timer after spawn() returns, in the turn
        # that spawned the routee: an ask to the pool is handled after it.
        assert stats(pool).size == 0
        clock.advance(4.9)
        assert not waiting.done()
        clock.advance(0.1)
        with pytest.raises(RouteeStartError, match=r"did not start within creation_timeout=5\.0 s"):
            waiting.get(timeout=WAIT)
        assert (stats(pool).failed_creations, stats(pool).size) == (1, 0)
    finally:
        gate.released.set()


def test_a_routee_whose_constructor_raises_fails_the_messages_waiting_for_it(system: ActorSystem, mode: str) -> None:
    pool = system.spawn(Pool, ChildSpec(Unbuildable, mode=mode), config=PoolConfig(warm_up=False), mode=mode)
    with pytest.raises(RouteeStartError, match=r"Unbuildable\(\.\.\.\) raised RuntimeError\('no API key'\)"):
        pool.ask("hello")
    assert pool.is_alive()
    assert stats(pool).failed_creations == 1


# -- statistics --------------------------------------------------------------------------------------------


def test_statistics_measure_load_and_time_on_the_injected_clock(
    roomy: ActorSystem, clock: ManualClock, mode: str
) -> None:
    pool = spawn_pool(roomy, mode, min_size=1, max_size=1, max_concurrent=2)
    gate, held = hold(pool)
    try:
        pool.tell("behind")  # a tell counts as in flight until handled
        busy = stats(pool)
        (routee,) = busy.routees
        assert (busy.busy, routee.active, routee.queue_length) == (1, 2, 1)
        clock.advance(4.0)
    finally:
        gate.released.set()
    held.get(timeout=WAIT)
    with pytest.raises(Crash):
        pool.ask("crash")
    done = stats(pool)
    (routee,) = done.routees
    assert (done.processed, done.failed, routee.processed, routee.failed) == (3, 1, 3, 1)
    assert routee.success_rate == pytest.approx(2 / 3)
    assert done.average_operation_time == pytest.approx(8.0 / 3)  # 4 s + 4 s (the tell waited) + 0 s
    assert routee.average_response_time == pytest.approx(0.9 * 0.9 * 4.0 + 0.1 * 0.9 * 4.0)
    assert (done.busy, routee.active) == (0, 0)


def test_a_broadcast_through_a_pool_reaches_every_routee(system: ActorSystem, mode: str) -> None:
    pool = spawn_pool(system, mode, min_size=3, max_size=3)
    replies = pool.ask(Broadcast("hello"))
    assert len({urn for urn, _, _ in replies}) == 3


# -- draining ----------------------------------------------------------------------------------------------


def test_drain_finishes_the_work_taken_then_stops_routees_and_pool(roomy: ActorSystem, mode: str) -> None:
    pool = spawn_pool(roomy, mode, min_size=1, max_size=1, overflow="queue")
    gate, held = hold(pool)
    queued = pool.ask("queued", block=False)
    try:
        drained = pool.ask(Drain(timeout=10.0), block=False)
        stats(pool)  # answered after the Drain: the pool is draining now
        with pytest.raises(ActorDeadError, match="draining"):
            pool.ask("too late")
        assert not drained.done()
    finally:
        gate.released.set()
    assert held.get(timeout=WAIT)[1] is gate
    assert queued.get(timeout=WAIT)[1] == "queued"
    assert drained.get(timeout=WAIT) == DrainResult(drained=True, abandoned=0)
    assert pool.actor_stopped.wait(WAIT)


def test_drain_stops_everything_when_its_timeout_passes(roomy: ActorSystem, clock: ManualClock, mode: str) -> None:
    pool = spawn_pool(roomy, mode, min_size=1, max_size=1, overflow="queue")
    gate, held = hold(pool)
    waiting = pool.ask("waiting", block=False)
    (routee,) = [r.ref for r in stats(pool).routees]
    try:
        drained = pool.ask(Drain(timeout=5.0), block=False)
        stats(pool)  # answered after the Drain: its timer is armed
        clock.advance(5.0)
        # No ask of the pool here: having handled its timeout, it may stop
        # (a system message) before a later ask is handled.
        with pytest.raises(ActorDeadError, match="timeout passed"):
            waiting.get(timeout=WAIT)  # what still waited is refused
        if mode == "asyncio":
            # Opened only once the routee is stopping: its stop cancels the handler
            # in the same loop callback, before the loop hears of the gate.
            assert routee.actor_stopped.wait(WAIT)
    finally:
        gate.released.set()
    if mode == "asyncio":  # a coroutine handler can be interrupted: stopping the routee cancels it
        with pytest.raises(ActorDeadError, match="stopped while handling"):
            held.get(timeout=WAIT)
    else:
        held.get(timeout=WAIT)  # the handler that was running finishes: it cannot be interrupted
    assert drained.get(timeout=WAIT) == DrainResult(drained=False, abandoned=2)
    assert not routee.is_alive()
    assert not pool.is_alive()


def test_an_idle_pool_drains_at_once(system: ActorSystem, mode: str) -> None:
    pool = spawn_pool(system, mode, min_size=2)
    assert pool.ask(Drain()) == DrainResult(drained=True, abandoned=0)
    assert pool.actor_stopped.wait(WAIT)


def test_a_reply_frees_its_routees_slot_before_it_wakes_the_asker(roomy: ActorSystem, mode: str) -> None:
    # So a client that asks one at a time always finds room in a pool of one.
    pool = spawn_pool(roomy, mode, min_size=1, max_size=1, max_concurrent=1)
    (routee,) = pool.routing.routees
    gate, held = hold(pool)
    load_when_woken: list[int] = []
    held.add_done_callback(lambda _: load_when_woken.append(routee.in_flight))  # runs as waiters wake
    gate.released.set()
    held.get(timeout=WAIT)
    assert load_when_woken == [0]
    assert pool.ask("next", timeout=WAIT)[1] == "next"
