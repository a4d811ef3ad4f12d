"""Routers end to end, in every execution mode: routing, replies, membership, every strategy.

No test sleeps: a routee is made slow by a `Gate` it holds until the test
releases it, time is moved with the `ManualClock`, and the router's own state
is read with asks (its mailbox is FIFO).
"""

from __future__ import annotations

import random
import threading
from typing import Any

import attrs
import pykka
import pytest
from pykka import ActorDeadError

from actors import (
    Actor,
    ActorSystem,
    AddRoutee,
    Broadcast,
    ChildSpec,
    ConsistentHashRouting,
    Future,
    GetRoutees,
    GetStatistics,
    ManualClock,
    NoRouteeError,
    RemoveRoutee,
    Router,
    RouterRef,
    RouterStatistics,
    RoutingStrategy,
    ScatterGatherFirstRouting,
    Supervisor,
    TailChoppingRouting,
    Terminated,
    WeightedCapabilitiesRouting,
)
from actors._core.future import Receipt
from tests.core.actors_for_tests import WAIT, Gate


class Worker(Actor):
    """Replies ``(name, message)`` and keeps what it got; holds a `Gate`; ``"fail"`` raises."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.got: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gate):
            return message.hold_then(lambda: self.name)
        if message == "fail":
            msg = f"{self.name} fails on purpose"
            raise ValueError(msg)
        if message == "got":
            return list(self.got)
        self.got.append(message)
        return (self.name, message)


class Arrivals:
    """Who got the message, in order; the first to get it (or everyone) holds a gate."""

    def __init__(self, *, everyone_holds: bool = False) -> None:
        self.names: list[str] = []
        self.gate = Gate()
        self.everyone_holds = everyone_holds
        self._cond = threading.Condition()

    def arrive(self, name: str) -> bool:
        with self._cond:
            self.names.append(name)
            self._cond.notify_all()
            return self.everyone_holds or len(self.names) == 1

    def wait_for(self, count: int) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.names) >= count, WAIT), f"saw only {self.names}"
            return list(self.names)


class Replica(Actor):
    """Answers a query with its name; the first replica to get it (or every one) is slow."""

    def __init__(self, name: str, arrivals: Arrivals) -> None:
        super().__init__()
        self.name = name
        self.arrivals = arrivals

    def on_receive(self, message: Any) -> Any:
        if message == "fail":
            msg = f"{self.name} fails on purpose"
            raise ValueError(msg)
        if self.arrivals.arrive(self.name):
            return self.arrivals.gate.hold_then(lambda: self.name)
        return self.name


@attrs.frozen
class Hold:
    gate: Gate


class WatchfulRouter(Router):
    """A router that can be held busy, and that reports routees it lost."""

    management_messages = Router.management_messages | {Hold}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = threading.Event()
        self.lost_refs: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Hold):  # told: held in a handler, which may await (asyncio mode)
            return message.gate.hold_then(lambda: None)
        return super().on_receive(message)

    def on_management(self, message: Any, reply: Future[Any]) -> bool:
        if isinstance(message, Hold):
            message.gate.hold()
            reply.set(None)
            return True
        return super().on_management(message, reply)

    def on_routee_terminated(self, message: Terminated) -> None:
        self.lost_refs.append(message.ref)
        self.lost.set()


def workers(system: ActorSystem, mode: str, count: int) -> list[Any]:
    return [system.spawn(Worker, f"w{i}", mode=mode) for i in range(count)]


# -- the message path ---------------------------------------------------------------------------------


def test_a_router_ref_routes_and_the_router_is_an_actor(system: ActorSystem, mode: str) -> None:
    router = system.spawn(Router, workers(system, mode, 2), mode=mode)
    assert isinstance(router, RouterRef)
    assert router.is_alive()
    assert router.ask("hello") in {("w0", "hello"), ("w1", "hello")}


@pytest.mark.parametrize(("n", "k"), [(1, 5), (3, 10), (4, 25)])
def test_routed_tells_reach_every_routee_exactly_k_times_in_the_order_sent(
    system: ActorSystem, mode: str, n: int, k: int
) -> None:
    refs = workers(system, mode, n)
    router = system.spawn(Router, refs, mode=mode)
    for i in range(k * n):
        router.tell(i)
    got = [ref.ask("got") for ref in refs]
    assert [len(g) for g in got] == [k] * n
    assert all(g == sorted(g) for g in got)
    assert sorted(m for g in got for m in g) == list(range(k * n))


def test_routed_messages_bypass_the_router_actor_even_while_it_is_busy(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 2)
    router = system.spawn(WatchfulRouter, refs, mode=mode)
    gate = Gate()
    router.tell(Hold(gate))
    gate.wait_entered()
    try:
        # The router actor is stuck in a handler, yet tells and asks through it go on.
        router.tell("told")
        assert router.ask("asked", timeout=WAIT) in {("w0", "asked"), ("w1", "asked")}
        assert router.ask(Broadcast("all"), timeout=WAIT) == (("w0", "all"), ("w1", "all"))
    finally:
        gate.released.set()
    assert sorted(m for ref in refs for m in ref.ask("got")) == ["all", "all", "asked", "told"]


def test_an_error_in_the_routee_reaches_the_asker_and_both_keep_running(system: ActorSystem, mode: str) -> None:
    router = system.spawn(Router, workers(system, mode, 1), mode=mode)
    with pytest.raises(ValueError, match="w0 fails on purpose"):
        router.ask("fail")
    assert router.ask("next") == ("w0", "next")
    stats = router.ask(GetStatistics())
    assert (stats.processed, stats.failed) == (2, 1)
    assert stats.routees[0].success_rate == 0.5


def test_messages_for_the_router_itself_go_to_its_mailbox(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 3)
    router = system.spawn(Router, refs, mode=mode, strategy="least_connections")
    assert router.ask(GetRoutees()) == tuple(refs)
    assert router.proxy().routee_refs().get(timeout=WAIT) == tuple(refs)
    stats = router.proxy().statistics().get(timeout=WAIT)
    assert isinstance(stats, RouterStatistics)
    assert stats.strategy == "least_connections"
    assert [s.ref for s in stats.routees] == refs
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.processed = 5  # type: ignore[misc]


def test_routers_nest(system: ActorSystem, mode: str) -> None:
    team_a = [system.spawn(Worker, name, mode=mode) for name in ("a0", "a1")]
    team_b = [system.spawn(Worker, name, mode=mode) for name in ("b0", "b1")]
    inner = [system.spawn(Router, team, mode=mode) for team in (team_a, team_b)]
    outer = system.spawn(Router, inner, mode=mode)
    assert [outer.ask(i) for i in range(4)] == [("a0", 0), ("b0", 1), ("a1", 2), ("b1", 3)]
    assert outer.ask(Broadcast("ping")) == (("a0", "ping"), ("b0", "ping"))
    outer.tell("t0")  # to team a's router, which tells a1
    outer.tell("t1")  # to team b's router, which tells b1
    assert [ref.ask("got") for ref in (*team_a, *team_b)] == [
        [0, "ping"],
        [2, "t0"],
        [1, "ping"],
        [3, "t1"],
    ]


# -- membership -------------------------------------------------------------------------------------


def test_routees_join_and_leave_at_run_time(system: ActorSystem, mode: str) -> None:
    a, b = workers(system, mode, 2)
    router = system.spawn(Router, mode=mode)
    with pytest.raises(NoRouteeError, match="no live routee"):
        router.tell("lost")
    with pytest.raises(NoRouteeError, match="AddRoutee"):
        router.ask("lost")
    assert router.ask(AddRoutee(a)) is None
    assert router.ask("one") == ("w0", "one")
    router.tell(AddRoutee(b))
    assert router.ask(GetRoutees()) == (a, b)
    assert router.ask(RemoveRoutee(a)) is True
    assert router.ask(RemoveRoutee(a)) is False
    assert [router.ask(i) for i in range(3)] == [("w1", 0), ("w1", 1), ("w1", 2)]
    assert a.is_alive()  # removed, not stopped


def test_a_routee_that_stops_is_never_routed_to_and_leaves_the_table(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 3)
    router = system.spawn(WatchfulRouter, refs, mode=mode)
    gate = Gate()
    router.tell(Hold(gate))  # the router cannot hear of the death yet: senders must see it themselves
    gate.wait_entered()
    try:
        refs[1].stop()
        for i in range(6):
            router.tell(i)
        assert [ref.ask("got") for ref in (refs[0], refs[2])] == [[0, 2, 4], [1, 3, 5]]
        assert [router.ask(i)[0] for i in range(4)] == ["w0", "w2", "w0", "w2"]
        assert system.dead_letters.count == 0  # nothing was sent its way
    finally:
        gate.released.set()
    assert router.proxy().lost.get().wait(WAIT)
    assert router.ask(GetRoutees()) == (refs[0], refs[2])
    assert router.ask(GetStatistics()).dead_routees_removed == 1
    assert router.proxy().lost_refs.get() == [refs[1]]


def test_a_routee_restarted_by_its_supervisor_stays_in_the_table(system: ActorSystem, mode: str) -> None:
    sup = system.spawn(Supervisor, [ChildSpec(Worker, args=("w0",), mode=mode)])
    (child,) = [info.ref for info in sup.proxy().which_children().get(timeout=WAIT)]
    router = system.spawn(Router, [child], mode=mode)
    router.tell("fail")  # a tell that raises: the supervisor restarts the routee in place
    router.tell("after")
    assert child.ask("got") == ["after"]  # the new instance, with the mail queued behind the failure
    assert router.ask(GetRoutees()) == (child,)


def test_stopping_a_router_leaves_its_routees_running(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 2)
    router = system.spawn(Router, refs, mode=mode)
    assert router.stop() is True
    with pytest.raises(ActorDeadError):
        router.tell("late")
    with pytest.raises(ActorDeadError):
        router.ask("late")
    assert all(ref.is_alive() for ref in refs)


def test_bad_routees_are_refused_with_what_to_do(system: ActorSystem, mode: str) -> None:
    with pytest.raises(TypeError, match="spawn the routee"):
        AddRoutee("not a ref")  # type: ignore[arg-type]
    (ref,) = workers(system, mode, 1)
    with pytest.raises(ValueError, match="weight must be a finite number > 0"):
        AddRoutee(ref, weight=0)
    router = system.spawn(Router, mode=mode)
    with pytest.raises(ValueError, match="cannot be its own routee"):
        router.ask(AddRoutee(router))


def test_broadcast_reaches_every_routee_and_an_asked_broadcast_gathers_the_replies(
    system: ActorSystem, mode: str
) -> None:
    refs = workers(system, mode, 3)
    router = system.spawn(Router, refs, mode=mode, strategy="consistent_hash")
    router.tell(Broadcast("reset"))
    assert router.ask(Broadcast("ping")) == (("w0", "ping"), ("w1", "ping"), ("w2", "ping"))
    assert [ref.ask("got") for ref in refs] == [["reset", "ping"]] * 3
    with pytest.raises(ValueError, match="fails on purpose"):
        router.ask(Broadcast("fail"))


def test_a_broadcast_router_sends_everything_everywhere(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 2)
    router = system.spawn(Router, refs, mode=mode, strategy="broadcast")
    router.tell("x")
    assert router.ask("y") == (("w0", "y"), ("w1", "y"))
    assert [ref.ask("got") for ref in refs] == [["x", "y"], ["x", "y"]]


# -- load-aware strategies --------------------------------------------------------------------------------


def test_least_connections_routes_around_a_routee_with_an_ask_in_flight(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 2)
    router = system.spawn(Router, refs, mode=mode, strategy="least_connections")
    gate = Gate()
    held = router.ask(gate, block=False)
    gate.wait_entered()
    try:
        busy = [s for s in router.ask(GetStatistics()).routees if s.active == 1]
        assert len(busy) == 1
        free = next(i for i, ref in enumerate(refs) if ref is not busy[0].ref)
        assert {router.ask(i)[0] for i in range(5)} == {f"w{free}"}
    finally:
        gate.released.set()
    assert held.get(timeout=WAIT) == f"w{1 - free}"


def test_smallest_mailbox_routes_around_a_backed_up_routee(system: ActorSystem, mode: str) -> None:
    slow, quick = workers(system, mode, 2)
    router = system.spawn(Router, [slow, quick], mode=mode, strategy="smallest_mailbox")
    gate = Gate()
    slow.tell(gate)
    gate.wait_entered()
    for i in range(10):
        slow.tell(f"backlog-{i}")
    try:
        for i in range(4):
            router.tell(i)
        assert quick.ask("got") == [0, 1, 2, 3]
    finally:
        gate.released.set()


def test_fastest_response_prefers_the_routee_that_answered_faster_on_the_injected_clock(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    slow, quick = workers(system, mode, 2)
    router = system.spawn(Router, [slow], mode=mode, strategy="fastest_response")
    gate = Gate()
    pending = router.ask(gate, block=False)
    gate.wait_entered()
    clock.advance(5.0)
    gate.released.set()
    assert pending.get(timeout=WAIT) == "w0"
    router.ask(AddRoutee(quick))
    assert [router.ask(i)[0] for i in range(5)] == ["w1"] * 5  # untried counts as 0 s, then 0 s < 5 s
    averages = [s.average_response_time for s in router.ask(GetStatistics()).routees]
    assert averages == [5.0, 0.0]


def test_weighted_capabilities_route_by_what_routees_declare(system: ActorSystem, mode: str) -> None:
    coder, analyst = workers(system, mode, 2)
    router = system.spawn(
        Router,
        [AddRoutee(coder, capabilities={"python"}, weight=3.0), AddRoutee(analyst, capabilities={"sql", "python"})],
        mode=mode,
        strategy=WeightedCapabilitiesRouting(requires=lambda m: m.get("needs", ())),
        rng=random.Random(7),
    )
    assert {router.ask({"needs": ["sql"], "n": i})[0] for i in range(10)} == {"w1"}
    both = [router.ask({"n": i})[0] for i in range(400)]
    assert 0.65 < both.count("w0") / len(both) < 0.85  # weight 3 against 1
    with pytest.raises(NoRouteeError, match=r"\['gpu'\].*\['python'\].*\['python', 'sql'\]"):
        router.ask({"needs": ["gpu"]})
    with pytest.raises(NoRouteeError):
        router.tell({"needs": ["gpu"]})


def test_consistent_hash_keeps_each_key_on_one_routee(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 4)
    router = system.spawn(Router, refs, mode=mode, strategy=ConsistentHashRouting(key=lambda m: m[0]))
    owners = {key: router.ask((key, 0))[0] for key in "abcdefgh"}
    for i in range(1, 4):
        for key, owner in owners.items():
            assert router.ask((key, i))[0] == owner


# -- fan-out strategies -----------------------------------------------------------------------------------


def replicas(system: ActorSystem, mode: str, arrivals: Arrivals, count: int = 3) -> list[Any]:
    return [system.spawn(Replica, f"r{i}", arrivals, mode=mode) for i in range(count)]


def test_scatter_gather_first_reply_wins_and_late_replies_are_dropped(system: ActorSystem, mode: str) -> None:
    arrivals = Arrivals()
    refs = replicas(system, mode, arrivals)
    router = system.spawn(Router, refs, mode=mode, strategy="scatter_gather_first")
    try:
        answer = router.ask("query", timeout=WAIT)
        holder = arrivals.wait_for(1)[0]
        assert answer in {"r0", "r1", "r2"} - {holder}
    finally:
        arrivals.gate.released.set()
    # Each replica answers a direct ask after the routed one (FIFO): the held
    # reply, sent after the ask was answered, was dropped by then.
    assert [ref.ask("query") for ref in refs] == ["r0", "r1", "r2"]
    stats = router.ask(GetStatistics())
    assert stats.processed == 3  # every reply was counted, the late one too


def test_scatter_gather_fails_with_the_first_failure_only_when_every_routee_fails(
    system: ActorSystem, mode: str
) -> None:
    refs = replicas(system, mode, Arrivals())
    router = system.spawn(Router, refs, mode=mode, strategy="scatter_gather_first")
    with pytest.raises(ValueError, match=r"r\d fails on purpose"):
        router.ask("fail", timeout=WAIT)


def test_scatter_gather_gives_up_within_its_deadline_on_the_injected_clock(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    arrivals = Arrivals(everyone_holds=True)
    refs = replicas(system, mode, arrivals, count=2)
    router = system.spawn(Router, refs, mode=mode, strategy=ScatterGatherFirstRouting(within=3.0))
    try:
        pending = router.ask("query", block=False)
        arrivals.wait_for(2)
        clock.advance(2.9)
        assert not pending.done()
        clock.advance(0.1)
        with pytest.raises(pykka.Timeout, match=r"within 3\.0 s"):
            pending.get(timeout=WAIT)
    finally:
        arrivals.gate.released.set()


def test_tail_chopping_asks_one_more_routee_each_interval_until_one_replies(
    system: ActorSystem, clock: ManualClock, mode: str
) -> None:
    arrivals = Arrivals()
    refs = replicas(system, mode, arrivals)
    strategy = TailChoppingRouting(interval=1.0, within=10.0)
    router = system.spawn(Router, refs, mode=mode, strategy=strategy, rng=random.Random(3))
    try:
        pending = router.ask("query", block=False)
        first = arrivals.wait_for(1)[0]
        clock.advance(0.5)
        assert sum(s.active for s in router.ask(GetStatistics()).routees) == 1  # nobody else asked yet
        clock.advance(0.5)
        answer = pending.get(timeout=WAIT)
        assert answer != first
        assert arrivals.wait_for(2) == [first, answer]
    finally:
        arrivals.gate.released.set()


class Failing(Actor):
    def on_receive(self, message: Any) -> Any:
        msg = f"cannot handle {message!r}"
        raise RuntimeError(msg)


def test_tail_chopping_moves_on_at_once_when_a_routee_fails(system: ActorSystem, mode: str) -> None:
    failing = system.spawn(Failing, mode=mode)
    router = system.spawn(
        Router,
        [failing, *workers(system, mode, 1)],
        mode=mode,
        strategy=TailChoppingRouting(interval=60.0),
        rng=random.Random(0),
    )
    # No clock time passes: whenever the failing routee comes first, the next one is asked at once.
    # Each order is a coin flip, so 40 asks try the failing routee first (1 - 2**-40) surely.
    assert [router.ask(i, timeout=WAIT) for i in range(40)] == [("w0", i) for i in range(40)]
    assert router.ask(GetStatistics()).routees[0].failed >= 1
    failing_too = system.spawn(Router, [failing], mode=mode, strategy=TailChoppingRouting(interval=60.0))
    with pytest.raises(RuntimeError, match="cannot handle 'x'"):
        failing_too.ask("x", timeout=WAIT)


def test_tail_chopping_gives_up_at_its_deadline(system: ActorSystem, clock: ManualClock, mode: str) -> None:
    arrivals = Arrivals(everyone_holds=True)
    refs = replicas(system, mode, arrivals, count=2)
    router = system.spawn(Router, refs, mode=mode, strategy=TailChoppingRouting(interval=1.0, within=2.5))
    try:
        pending = router.ask("query", block=False)
        arrivals.wait_for(1)
        clock.advance(1.0)
        arrivals.wait_for(2)
        clock.advance(1.0)
        assert not pending.done()
        clock.advance(0.5)
        with pytest.raises(pykka.Timeout, match=r"within 2.5 s \(2 of 2 asked"):
            pending.get(timeout=WAIT)
    finally:
        arrivals.gate.released.set()


# -- custom strategies ------------------------------------------------------------------------------------


class LastRouting(RoutingStrategy):
    """Always the routee that joined last; records the threads it ran on."""

    name = "last"

    def __init__(self, *, thread_safe: bool) -> None:
        self.thread_safe = thread_safe  # type: ignore[misc]
        self.threads: list[str] = []

    def select(self, message: Any, routees: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return routees[-1]


def test_a_custom_strategy_implements_select(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 3)
    strategy = LastRouting(thread_safe=True)
    router = system.spawn(Router, refs, mode=mode, strategy=strategy)
    router.tell("t")
    assert router.ask("a") == ("w2", "a")
    assert strategy.threads == [threading.current_thread().name] * 2  # routed on the sender's thread


def test_a_strategy_that_is_not_thread_safe_routes_from_the_router_thread(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 3)
    strategy = LastRouting(thread_safe=False)
    router = system.spawn(Router, refs, mode=mode, strategy=strategy)
    router.tell("t")
    assert router.ask("a", timeout=WAIT) == ("w2", "a")
    assert refs[2].ask("got") == ["t", "a"]
    assert threading.current_thread().name not in strategy.threads
    assert len(strategy.threads) == 2


@attrs.frozen
class Quit:
    pass


class QuittingRouter(Router):
    management_messages = Router.management_messages | {Quit}

    def on_management(self, message: Any, reply: Future[Any]) -> bool:
        if isinstance(message, Quit):
            self.stop()
            reply.set(None)
            return True
        return super().on_management(message, reply)


def test_a_router_that_stops_itself_stops_itself_not_a_routee(system: ActorSystem, mode: str) -> None:
    refs = workers(system, mode, 2)
    router = system.spawn(QuittingRouter, refs, mode=mode)
    router.ask(Quit())
    assert router.actor_stopped.wait(WAIT)
    assert all(ref.is_alive() for ref in refs)
    assert [ref.ask("got") for ref in refs] == [[], []]


# -- the runtime seam under pools: tells with receipts ------------------------------------------------


def test_a_tell_with_a_receipt_reports_its_outcome_and_keeps_tell_semantics(system: ActorSystem, mode: str) -> None:
    sup = system.spawn(Supervisor, [ChildSpec(Worker, args=("w0",), mode=mode)])
    (ref,) = [info.ref for info in sup.proxy().which_children().get(timeout=WAIT)]
    done: Receipt[Any] = Receipt()
    ref._post_tell("hello", done)
    assert done.get(timeout=WAIT) == ("w0", "hello")
    failed: Receipt[Any] = Receipt()
    ref._post_tell("fail", failed)
    with pytest.raises(ValueError, match="fails on purpose"):
        failed.get(timeout=WAIT)
    assert ref.ask("got") == []  # the failure failed the actor: its supervisor restarted it
    ref.stop()
    lost: Receipt[Any] = Receipt()
    with pytest.raises(ActorDeadError):
        ref._post_tell("late", lost)
