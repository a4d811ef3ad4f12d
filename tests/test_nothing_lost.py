"""Nothing is lost: whatever ends an actor, every ask it holds or has queued resolves, every tell is handled or dead.

One matrix: each way an actor can end (``stop``, a ``failure``, its supervisor
giving up past its restart intensity (``give_up``), ``shutdown``, a
``restart`` in place) x each kind of actor (a ``plain`` actor, a ``router``,
a ``pool``) x every execution mode. In each case the target is held at a
`Gate` while asks and tells queue in it: in its mailbox, inside its own
messages (a router's management asks and the asks it routes from its own
thread travel as tells of a wrapper that carries the future), and in a
pool's admission queue. Then it ends, and every ask must resolve (a result,
the error, or `ActorDeadError`) and every tell be handled or a dead letter.

"shutdown" is the system message a shutdown (or a stopping parent) sends,
posted while the target is busy, so it deterministically finds mail queued.
No test sleeps: every wait is on a future or an event, with a timeout.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from pykka import ActorDeadError

from actors import (
    Actor,
    ActorSystem,
    AwaitStarted,
    ChildSpec,
    Decider,
    GetRoutees,
    GetStatistics,
    ManualClock,
    Pool,
    PoolConfig,
    Router,
    RoutingStrategy,
    SupervisionPolicy,
)
from actors._core import STOP
from tests.core.actors_for_tests import WAIT, Gate

if TYPE_CHECKING:
    from collections.abc import Iterator

ENDINGS = ("stop", "failure", "give_up", "shutdown", "restart")
TARGETS = ("plain", "router", "pool")


class Boom(Exception):
    pass


class Hold:
    """A message every target handles itself: hold its gate, then raise `Boom` if asked to."""

    def __init__(self, gate: Gate, *, crash: bool) -> None:
        self.gate = gate
        self.crash = crash

    def handle(self) -> Any:
        def after() -> None:
            if self.crash:
                msg = "crashed on purpose, after the gate"
                raise Boom(msg)

        return self.gate.hold_then(after)


class Worker(Actor):
    """Logs every tell and ask it handles; replies ``("done", message)``; holds a `Hold` or a `Gate`."""

    def __init__(self, log: list[Any]) -> None:
        super().__init__()
        self.log = log

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Hold):
            return message.handle()
        if isinstance(message, Gate):
            return message.hold_then(lambda: "held")
        self.log.append(message)
        return ("done", message)


class HeldRouter(Router):
    """A router that can be held at a gate (a `Hold` is one of its own messages)."""

    management_messages = Router.management_messages | {Hold}

    def on_receive(self, message: Any) -> Any:
        if message.__class__ is Hold:
            return message.handle()
        return super().on_receive(message)


class HeldPool(Pool):
    """A pool that can be held at a gate, and says when its restart begins to tear it down."""

    management_messages = Pool.management_messages | {Hold}

    def __init__(self, *args: Any, ending: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ending = ending

    def on_receive(self, message: Any) -> Any:
        if message.__class__ is Hold:
            return message.handle()
        return super().on_receive(message)

    def pre_restart(self, exc: BaseException | None) -> None:
        # Its routees are stopped right after this, in the same turn.
        self.ending.set()


class LastRouting(RoutingStrategy):
    """Not thread-safe: the router routes every message from its own thread (a `_Route` in its mailbox)."""

    name = "last"
    thread_safe = False

    def select(self, message: Any, routees: Any) -> Any:
        return routees[-1]


class Case:
    """One target, the asks and tells queued in it, and what became of them."""

    def __init__(self, system: ActorSystem, kind: str, mode: str, restart: str) -> None:
        self.system = system
        self.kind = kind
        self.log: list[Any] = []
        self.asks: list[Any] = []
        self.tells: list[str] = []
        self.ending = threading.Event()
        self.routee_gate: Gate | None = None
        self.routee_reply: Any = None
        if kind == "plain":
            self.target = system.spawn(Worker, self.log, mode=mode, restart=restart)
        elif kind == "router":
            worker = system.spawn(Worker, self.log, mode=mode)
            self.target = system.spawn(HeldRouter, [worker], LastRouting(), mode=mode, restart=restart)
        else:
            config = PoolConfig(min_size=1, max_size=1, overflow="queue")
            spec = ChildSpec(Worker, args=(self.log,), mode=mode)
            self.target = system.spawn(HeldPool, spec, config=config, ending=self.ending, mode=mode, restart=restart)
            self.target.ask(AwaitStarted(), timeout=WAIT)
            # The pool's only routee is kept busy: what is sent next waits in the pool's queue.
            self.routee_gate = Gate()
            self.routee_reply = self.target.ask(self.routee_gate, block=False)
            self.routee_gate.wait_entered()

    def hold(self, *, crash: bool) -> Gate:
        gate = Gate()
        self.target.tell(Hold(gate, crash=crash))
        gate.wait_entered()
        return gate

    def queue_mail(self) -> None:
        ask = self.target.ask
        if self.kind == "router":
            self.asks += [ask(GetRoutees(), block=False), ask(GetStatistics(), block=False)]
        if self.kind == "pool":
            self.asks += [ask(GetStatistics(), block=False), ask(AwaitStarted(), block=False)]
        self.asks += [ask(f"a{i}", block=False) for i in range(3)]
        for i in range(2):
            tell = f"{self.kind}-t{i}"
            self.tells.append(tell)
            self.target.tell(tell)

    def release_routee(self, ending: str) -> None:
        if self.routee_gate is None:
            return
        # Let the routee go only once the pool has begun to end, so what waits
        # in the pool's queue is still there when it does.
        if ending == "restart":
            assert self.ending.wait(WAIT), "the pool was never restarted"
        else:
            assert self.target.actor_inbox.stopped_event().wait(WAIT), "the pool never stopped"
        self.routee_gate.released.set()
        self.asks.append(self.routee_reply)

    def unresolved(self) -> list[Any]:
        """Wait for every ask (with a timeout); return those that never resolved."""
        lost = []
        deadline = time.monotonic() + WAIT  # one hang guard for them all, not one each
        for future in self.asks:
            try:
                future.get(timeout=max(0.01, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - any outcome but a timeout is an answer
                if type(exc).__name__ == "Timeout":
                    lost.append(future)
        return lost

    def tells_accounted(self) -> dict[str, int]:
        """How many times each tell was handled or dead-lettered (call after shutdown)."""
        seen = dict.fromkeys(self.tells, 0)
        for message in self.log:
            if message in seen:
                seen[message] += 1
        for letter in self.system.dead_letters.recent():
            # A tell routed from the router's own thread is dead inside its wrapper.
            message = letter.message
            inner = getattr(message, "message", None)
            for candidate in (message, inner):
                if isinstance(candidate, str) and candidate in seen:
                    seen[candidate] += 1
        return seen


@pytest.fixture
def ending_system(request: pytest.FixtureRequest) -> Iterator[ActorSystem]:
    ending = request.node.callspec.params["ending"]
    # give_up: the root gives up on a permanent actor at its first failure.
    policy = SupervisionPolicy(max_restarts=0) if ending == "give_up" else SupervisionPolicy()
    with ActorSystem("endings", clock=ManualClock(), dispatchers=4, root_policy=policy) as system:
        yield system


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("ending", ENDINGS)
def test_whatever_ends_an_actor_every_queued_ask_resolves_and_every_tell_is_handled_or_dead(
    ending_system: ActorSystem, mode: str, ending: str, kind: str
) -> None:
    system = ending_system
    restart = "permanent" if ending in {"give_up", "restart"} else "temporary"
    case = Case(system, kind, mode, restart)
    crash = ending in {"failure", "give_up", "restart"}
    gate = case.hold(crash=crash)
    if ending == "stop":
        case.target.stop(block=False)  # what is sent next races with it: queued behind the stop
    case.queue_mail()
    if ending == "shutdown":
        case.target.actor_inbox.post_system(STOP)
    gate.released.set()
    case.release_routee(ending)
    assert case.unresolved() == []
    system.shutdown(timeout=WAIT)
    assert case.tells_accounted() == dict.fromkeys(case.tells, 1)


# -- the shapes the issue reported ------------------------------------------------------------------


def _issue_shape_pool(system: ActorSystem, mode: str, restart: str) -> tuple[Any, list[Any]]:
    log: list[Any] = []
    policy = SupervisionPolicy(max_restarts=0, decider=Decider(ask_failures=(Boom,)))
    config = PoolConfig(min_size=1, max_size=1, overflow="queue", supervision=policy)
    pool = system.spawn(Pool, ChildSpec(Worker, args=(log,), mode=mode), config=config, mode=mode, restart=restart)
    pool.ask(AwaitStarted(), timeout=WAIT)
    return pool, log


@pytest.mark.parametrize("restart", ["temporary", "permanent"])
def test_a_pool_that_gives_up_on_its_routee_refuses_the_asks_and_tells_waiting_in_its_queue(
    system: ActorSystem, mode: str, restart: str
) -> None:
    pool, log = _issue_shape_pool(system, mode, restart)
    gate = Gate()
    crashing = pool.ask(Hold(gate, crash=True), block=False)  # the one ask the routee raises on
    gate.wait_entered()
    waiting = [pool.ask(f"w{i}", block=False) for i in range(3)]
    pool.tell("told")
    gate.released.set()
    with pytest.raises(Boom):
        crashing.get(timeout=WAIT)
    for future in waiting:
        with pytest.raises(ActorDeadError):
            future.get(timeout=WAIT)
    system.shutdown(timeout=WAIT)
    assert "told" not in log
    assert [d.message for d in system.dead_letters.recent()].count("told") == 1


class FailsToStart(Actor):
    def on_start(self) -> None:
        msg = "cannot start"
        raise Boom(msg)

    def on_receive(self, message: Any) -> Any:
        return message


def test_a_pool_whose_routee_keeps_failing_in_on_start_answers_await_started_and_the_asks_waiting(
    system: ActorSystem, mode: str
) -> None:
    # The routee's default restart type is permanent: it is restarted until the pool gives up.
    pool = system.spawn(Pool, ChildSpec(FailsToStart, mode=mode), mode=mode)
    started = pool.ask(AwaitStarted(), block=False)
    waiting = [pool.ask(f"w{i}", block=False) for i in range(3)]
    for future in [started, *waiting]:
        with pytest.raises(Exception) as info:  # noqa: PT011 - ActorDeadError or RouteeStartError: an answer
            future.get(timeout=WAIT)
        assert type(info.value).__name__ != "Timeout"


def test_a_routers_management_asks_queued_at_its_stop_get_actor_dead_error(system: ActorSystem, mode: str) -> None:
    log: list[Any] = []
    worker = system.spawn(Worker, log, mode=mode)
    router = system.spawn(HeldRouter, [worker], mode=mode)
    gate = Gate()
    router.tell(Hold(gate, crash=False))
    gate.wait_entered()
    router.stop(block=False)
    queued = [router.ask(message, block=False) for message in (GetRoutees(), GetStatistics())]
    gate.released.set()
    for future in queued:
        with pytest.raises(ActorDeadError):
            future.get(timeout=WAIT)


def test_an_ask_routed_through_the_routers_mailbox_gets_actor_dead_error_if_the_router_fails_first(
    system: ActorSystem, mode: str
) -> None:
    worker = system.spawn(Worker, [], mode=mode)
    router = system.spawn(HeldRouter, [worker], LastRouting(), mode=mode)
    gate = Gate()
    router.tell(Hold(gate, crash=True))
    gate.wait_entered()
    routed = router.ask("routed", block=False)
    gate.released.set()
    with pytest.raises(ActorDeadError):
        routed.get(timeout=WAIT)
