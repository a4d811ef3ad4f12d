"""Asyncio mode specifics: awaiting handlers, loops, cancellation, reentrancy, bad input.

The semantics every mode shares (pykka's) are tested once for all modes in
test_actor.py, test_system.py and the others; this file covers what only the
asyncio mode has. Nothing here sleeps to synchronize: handlers that must be
"slow" await a troupe `Future` (awaitable on any loop, settable from any
thread) that the test settles when it is ready.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import TYPE_CHECKING, Any

import pykka
import pytest
from pykka import ActorDeadError

from actors import (
    Actor,
    ActorSystem,
    AsyncioActor,
    BoundedMailbox,
    ChildSpec,
    DeadLetterReason,
    EventLoopError,
    Future,
    MailboxFullError,
    ModeError,
    PooledActor,
    SupervisionPolicy,
    Supervisor,
    SystemShutdownError,
    Terminated,
)
from actors._core.future import Receipt
from tests.core.actors_for_tests import WAIT, Recorder

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from actors import ManualClock


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on a fresh loop (the test's own, not the system's), with a hang guard."""
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith("-asyncio")]


class Hold:
    """A message whose handler awaits `gate`: entered -> (test acts) -> release."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.entered: Future[None] = Future()
        self.gate: Future[Any] = Future()

    def __repr__(self) -> str:
        return f"Hold({self.label!r})"

    def wait_entered(self) -> None:
        self.entered.get(timeout=WAIT)

    def release(self, value: Any = None) -> None:
        self.gate.set(value)


class Waiter(Actor):
    """Awaits the gate of each `Hold` it gets; records starts, ends and cancellations.

    A mode-neutral class with a coroutine handler: it runs as "asyncio" by default.
    """

    def __init__(self, log: list[str] | None = None) -> None:
        super().__init__()
        self.log: list[str] = [] if log is None else log

    async def on_receive(self, message: Any) -> Any:
        if isinstance(message, Hold):
            label = message.label
            self.log.append(f"start {label}")
            message.entered.set(None)
            try:
                value = await message.gate
            except asyncio.CancelledError:
                self.log.append(f"cancelled {label}")
                raise
            self.log.append(f"end {label}")
            return (label, value)
        if message == "fail":
            await asyncio.sleep(0)
            msg = "failed after awaiting"
            raise ValueError(msg)
        if message == "log":
            return list(self.log)
        self.log.append(f"handled {message}")
        return message


class SyncSlow(Actor):
    """The blocking counterpart of `Waiter`, for pooled and thread actors: blocks on the gate."""

    def on_receive(self, message: Hold) -> Any:
        message.entered.set(None)
        return (message.label, message.gate.get(timeout=WAIT))


# -- the loop is never blocked ---------------------------------------------------


@pytest.mark.parametrize("target_mode", ["asyncio", "pooled", "thread"])
def test_a_heartbeat_keeps_ticking_while_a_coroutine_awaits_a_slow_ask(system: ActorSystem, target_mode: str) -> None:
    # The slow actor answers only once the heartbeat has ticked ten times on
    # the awaiting coroutine's own loop. Had the await blocked that loop, the
    # heartbeat could never tick and the ask would never be answered.
    slow = system.spawn(Waiter if target_mode == "asyncio" else SyncSlow, mode=target_mode)
    order: list[str] = []

    async def main() -> None:
        hold = Hold("slow")

        async def heartbeat() -> None:
            for i in range(10):
                order.append(f"tick {i}")
                await asyncio.sleep(0)
            order.append("release")
            hold.release("opened")

        async def asker() -> None:
            reply = await slow.ask(hold, block=False)
            order.append(f"reply {reply}")

        await asyncio.gather(asker(), heartbeat())

    run(main())
    assert order == [*(f"tick {i}" for i in range(10)), "release", "reply ('slow', 'opened')"]


def test_other_actors_on_the_loop_keep_running_while_one_awaits(system: ActorSystem) -> None:
    busy = system.spawn(Waiter)
    other = system.spawn(Waiter)
    hold = Hold("wait")
    pending = busy.ask(hold, block=False)
    hold.wait_entered()
    for i in range(5):
        assert other.ask(i, timeout=WAIT) == i  # the same loop serves it meanwhile
    assert not pending.done()
    hold.release("done")
    assert pending.get(timeout=WAIT) == ("wait", "done")


def test_derived_futures_are_awaited_without_any_thread(system: ActorSystem) -> None:
    slow = system.spawn(Waiter)
    quick = system.spawn(Recorder)

    async def main() -> list[Any]:
        hold = Hold("a")
        first = slow.ask(hold, block=False)
        second = quick.ask(2, block=False)
        before = set(threading.enumerate())
        derived = [
            first.map(lambda reply: reply[1] * 10),
            first.join(second),
            second.map(lambda v: [v, v + 1]).filter(lambda v: v > 2),
            second.map(lambda v: [v, v]).reduce(lambda a, b: a + b),
        ]
        waiting = asyncio.gather(*(asyncio.ensure_future(d) for d in derived))
        await asyncio.sleep(0)
        assert set(threading.enumerate()) == before  # pykka's fallback spent an executor thread here
        hold.release(4)
        results = await waiting
        assert set(threading.enumerate()) == before
        return results

    assert run(main()) == [40, [("a", 4), 2], [3], 4]


def test_a_future_with_a_foreign_get_hook_is_computed_on_a_thread_that_ends() -> None:
    hooked: Future[str] = Future()
    hooked.set_get_hook(lambda timeout: f"hooked {timeout}")

    async def main() -> str:
        return await hooked

    assert run(main()) == "hooked None"


# -- asking across modes -----------------------------------------------------------


class Relay(Actor):
    """Forwards ``[next, *rest]`` to `next` and replies with the chain of modes it went through."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def on_receive(self, path: list[Any]) -> list[str]:
        if not path:
            return [self.label]
        return [self.label, *path[0].ask(path[1:])]


class AsyncRelay(Relay):
    async def on_receive(self, path: list[Any]) -> list[str]:  # type: ignore[override]
        if not path:
            return [self.label]
        return [self.label, *await path[0].ask(path[1:], block=False)]


def test_asyncio_pooled_and_thread_actors_ask_each_other_both_ways_in_one_chain(system: ActorSystem) -> None:
    # Each asyncio actor awaits the next; pooled and thread actors block on it.
    # At most one pooled actor blocks at a time, and the fixture's pool has two threads.
    def relay(mode: str, i: int) -> Any:
        label = f"{mode} {i}"
        return system.spawn(AsyncRelay if mode == "asyncio" else Relay, label, mode=mode)

    modes = ["asyncio", "pooled", "asyncio", "thread", "asyncio", "thread", "pooled", "asyncio"]
    chain = [relay(mode, i) for i, mode in enumerate(modes)]
    expected = [f"{mode} {i}" for i, mode in enumerate(modes)]
    assert chain[0].ask(chain[1:], timeout=WAIT) == expected
    # The other way round, entered from a coroutine on the test's own loop.
    back = chain[::-1]

    async def main() -> list[str]:
        return await back[0].ask(back[1:], block=False)  # type: ignore[no-any-return]

    assert run(main()) == expected[::-1]


def test_an_asyncio_actor_blocking_on_an_actor_of_its_own_loop_gets_a_clear_error(system: ActorSystem) -> None:
    target = system.spawn(Recorder, mode="asyncio")

    class Blocker(AsyncioActor):
        def on_receive(self, message: Any) -> Any:
            if message == "ask":
                return target.ask("never sent")
            if message == "get":
                return target.ask("sent", block=False).get()
            return target.stop()

    blocker = system.spawn(Blocker)
    for message, call in (("ask", "ask"), ("get", "ask"), ("stop", "stop")):
        with pytest.raises(EventLoopError, match=rf"await ref\.{call}\(.*block=False\)"):
            blocker.ask(message, timeout=WAIT)
    assert target.ask("get", timeout=WAIT) == ["sent"]  # a refused blocking ask sends nothing
    assert blocker.is_alive()
    assert target.is_alive()
    assert system.spawn(Recorder).ask("pooled still fine") == "pooled still fine"


def test_a_handler_awaiting_a_reply_from_its_own_actor_gets_a_clear_error(system: ActorSystem) -> None:
    class SelfAsker(AsyncioActor):
        async def on_receive(self, message: Any) -> Any:
            if message == "outer":
                return await self.actor_ref.ask("inner", block=False)
            return message

    ref = system.spawn(SelfAsker)
    with pytest.raises(EventLoopError, match="its own actor"):
        ref.ask("outer", timeout=WAIT)
    assert ref.ask("still works", timeout=WAIT) == "still works"


# -- ordering and reentrancy --------------------------------------------------------


def test_while_a_handler_awaits_its_actor_handles_no_other_message(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Waiter, log)
    probe = system.spawn(Waiter)
    hold = Hold("first")
    first = ref.ask(hold, block=False)
    second = ref.ask("second", block=False)
    hold.wait_entered()
    # A round trip through the same loop: had the turn not been held, the
    # turn handling "second" was queued on the loop before this one.
    assert probe.ask("probe", timeout=WAIT) == "probe"
    assert log == ["start first"]
    assert not second.done()
    hold.release("go")
    assert first.get(timeout=WAIT) == ("first", "go")
    assert second.get(timeout=WAIT) == "second"
    assert log == ["start first", "end first", "handled second"]


def test_coroutine_handlers_that_suspend_or_not_are_handled_one_by_one_in_order(system: ActorSystem) -> None:
    class Mixed(AsyncioActor):
        def __init__(self) -> None:
            super().__init__()
            self.log: list[int] = []
            self.running = False

        async def on_receive(self, message: int) -> Any:
            assert not self.running, "two handlers of one actor overlapped"
            self.running = True
            for _ in range(message % 3):  # 0, 1 or 2 suspensions
                await asyncio.sleep(0)
            self.log.append(message)
            self.running = False
            return message if message % 5 else list(self.log)

    ref = system.spawn(Mixed)
    futures = []
    for i in range(300):
        if i % 2:
            futures.append(ref.ask(i, block=False))
        else:
            ref.tell(i)
    replies = [f.get(timeout=WAIT) for f in futures]
    assert ref.proxy().log.get(timeout=WAIT) == list(range(300))
    odd = [i for i in range(300) if i % 2]
    assert [r for r in replies if not isinstance(r, list)] == [i for i in odd if i % 5]
    assert [r for r in replies if isinstance(r, list)] == [list(range(i + 1)) for i in odd if not i % 5]


_SEEN: contextvars.ContextVar[Any] = contextvars.ContextVar("_SEEN")


class FirstStep(AsyncioActor):
    """Handlers that end in their first step (no await reached), or suspend in it, each telling what it saw."""

    async def on_receive(self, message: str) -> Any:
        task = asyncio.current_task()
        seen = (task is not None and not task.done(), _SEEN.get(None))
        _SEEN.set(message)  # in the handler task's own context: no other handler sees it
        if message == "timeout":
            async with asyncio.timeout(WAIT):  # noqa: ASYNC100 - it needs a current task, even with no await inside
                return ("timeout", *seen)
        if message == "self-cancel":
            assert task is not None
            task.cancel()
            try:
                await asyncio.sleep(WAIT)  # suspended in the first step, cancelled before the task's own step
            except asyncio.CancelledError:
                return ("cancelled", *seen)
            return ("not cancelled", *seen)
        if message == "raise":
            msg = "raised in the first step"
            raise ValueError(msg)
        return (message, *seen)


def test_a_coroutine_handler_that_ends_without_suspending_runs_as_its_task_in_its_own_context(
    system: ActorSystem,
) -> None:
    ref = system.spawn(FirstStep)
    assert ref.ask("plain", timeout=WAIT) == ("plain", True, None)
    assert ref.ask("timeout", timeout=WAIT) == ("timeout", True, None)
    assert ref.ask("self-cancel", timeout=WAIT) == ("cancelled", True, None)
    with pytest.raises(ValueError, match="first step"):
        ref.ask("raise", timeout=WAIT)
    assert ref.ask("after", timeout=WAIT) == ("after", True, None)
    assert ref.is_alive()


def test_an_async_handler_that_never_suspends_replies_in_the_turn_that_took_its_message() -> None:
    # On the caller's own loop, the turn runs in the loop pass after the ask;
    # the reply is set in that same pass, not one pass later by a task's step.
    async def main() -> list[bool]:
        async with ActorSystem("given", loop=asyncio.get_running_loop(), dispatchers=1) as system:
            ref = system.spawn(FirstStep)
            await ref.ask("started", block=False)
            done = []
            for i in range(3):
                future = ref.ask(str(i), block=False)
                await asyncio.sleep(0)  # one loop pass: the turn ran
                done.append(future.done())
                await future
            return done

    assert run(main()) == [True, True, True]


def test_handlers_of_one_turn_that_end_at_once_share_a_task_but_not_a_cancellation() -> None:
    class Burst(AsyncioActor):
        async def on_receive(self, message: str) -> Any:
            task = asyncio.current_task()
            assert task is not None
            if message == "cancel own task, return":
                task.cancel()
                return message
            if message == "suspend":
                await asyncio.sleep(0)
                return "resumed"
            return (message, id(task))

    async def main() -> list[Any]:
        async with ActorSystem("given", loop=asyncio.get_running_loop(), dispatchers=1) as system:
            ref = system.spawn(Burst)
            await ref.ask("started", block=False)
            # Sent with no await between: one turn takes them all.
            messages = ["a", "b", "cancel own task, return", "suspend", "c"]
            return list(await asyncio.gather(*(ref.ask(m, block=False) for m in messages)))

    (a, a_task), (b, b_task), returned, resumed, (c, _) = run(main())
    assert (a, b, returned, resumed, c) == ("a", "b", "cancel own task, return", "resumed", "c")
    assert a_task == b_task  # ended at once, one after the other: one task


def test_a_cancellation_meant_for_one_handler_does_not_reach_the_next(system: ActorSystem) -> None:
    class Probe(Waiter):
        async def on_receive(self, message: Any) -> Any:
            if message == "cancelling":
                task = asyncio.current_task()
                assert task is not None
                return task.cancelling()
            return await super().on_receive(message)

    ref = system.spawn(Probe)
    hold = Hold("abandoned")
    abandoned = ref.ask(hold, block=False)
    probe = ref.ask("cancelling", block=False)  # queued behind: handled once the first is cancelled
    hold.wait_entered()
    ref._cell.abandon(abandoned, pykka.Timeout("given up"))
    with pytest.raises(pykka.Timeout, match="given up"):
        abandoned.get(timeout=WAIT)
    assert probe.get(timeout=WAIT) == 0


def test_a_reentrant_actor_handles_the_next_message_while_a_handler_awaits(system: ActorSystem) -> None:
    class Reentrant(Waiter):
        reentrant = True

    log: list[str] = []
    ref = system.spawn(Reentrant, log)
    hold_a, hold_b = Hold("a"), Hold("b")
    a = ref.ask(hold_a, block=False)
    b = ref.ask(hold_b, block=False)
    c = ref.ask("c", block=False)
    assert c.get(timeout=WAIT) == "c"  # handled while a and b await
    hold_b.release("second")
    assert b.get(timeout=WAIT) == ("b", "second")
    assert not a.done()
    hold_a.release("first")
    assert a.get(timeout=WAIT) == ("a", "first")
    # Handlers start in mailbox order; they finish in whatever order their awaits end.
    assert log == ["start a", "start b", "handled c", "end b", "end a"]


def test_a_stop_reached_by_a_reentrant_actor_cancels_its_running_handlers(system: ActorSystem) -> None:
    class Reentrant(Waiter):
        reentrant = True

    log: list[str] = []
    ref = system.spawn(Reentrant, log)
    hold = Hold("running")
    running = ref.ask(hold, block=False)
    hold.wait_entered()
    assert ref.stop(timeout=WAIT) is True
    with pytest.raises(ActorDeadError, match="stopped while handling"):
        running.get(timeout=WAIT)
    assert log == ["start running", "cancelled running"]


# -- stopping, timeouts and failures ---------------------------------------------------


class Parent(PooledActor):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.child = self.spawn(Waiter, log, name="child")

    def on_receive(self, message: Any) -> Any:
        return self.child


def test_stopping_the_parent_cancels_the_childs_in_flight_handler_and_its_asker_hears_why(
    system: ActorSystem,
) -> None:
    log: list[str] = []
    parent = system.spawn(Parent, log)
    child = parent.ask("child")
    hold = Hold("in flight")
    pending = child.ask(hold, block=False)
    hold.wait_entered()
    assert parent.stop(timeout=WAIT) is True
    with pytest.raises(ActorDeadError, match=r"'child'.*stopped while handling the message; its handler was cancelled"):
        pending.get(timeout=WAIT)
    assert log == ["start in flight", "cancelled in flight"]  # the handler's cleanup ran
    letters = [(d.message, d.reason) for d in system.dead_letters.recent()]
    assert letters == [(hold, DeadLetterReason.STOPPED_WHILE_HANDLING)]


def test_shutdown_cancels_in_flight_handlers_instead_of_waiting_for_them() -> None:
    log: list[str] = []
    system = ActorSystem("cancelled", dispatchers=1)
    ref = system.spawn(Waiter, log)
    hold = Hold("forever")
    pending = ref.ask(hold, block=False)
    hold.wait_entered()
    system.shutdown(timeout=WAIT)
    with pytest.raises(ActorDeadError, match="stopped while handling"):
        pending.get(timeout=WAIT)
    assert log == ["start forever", "cancelled forever"]


def test_ref_stop_lets_the_handler_in_flight_finish_first_as_pykka(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Waiter, log)
    hold = Hold("first")
    pending = ref.ask(hold, block=False)
    hold.wait_entered()
    stopped = ref.stop(block=False)
    hold.release("finished")
    assert pending.get(timeout=WAIT) == ("first", "finished")
    assert stopped.get(timeout=WAIT) is True
    assert log == ["start first", "end first"]


def test_an_ask_timeout_cancels_the_running_handler_and_the_actor_goes_on(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Waiter, log)
    with pytest.raises(pykka.Timeout, match="abandoned"):
        ref.ask(Hold("too slow"), timeout=0.05)
    assert ref.ask("next", timeout=WAIT) == "next"  # handled once the cancelled handler ended
    assert log == ["start too slow", "cancelled too slow", "handled next"]
    letters = [d.reason for d in system.dead_letters.recent()]
    assert letters == [DeadLetterReason.ASK_ABANDONED]


def test_an_ask_that_times_out_while_queued_is_skipped(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Waiter, log)
    hold = Hold("busy")
    busy = ref.ask(hold, block=False)
    hold.wait_entered()
    with pytest.raises(pykka.Timeout):
        ref.ask("queued", timeout=0.05)
    hold.release("done")
    assert busy.get(timeout=WAIT) == ("busy", "done")
    assert ref.ask("log", timeout=WAIT) == ["start busy", "end busy"]  # "queued" never ran
    assert [(d.message, d.reason) for d in system.dead_letters.recent()] == [("queued", DeadLetterReason.ASK_ABANDONED)]


def test_cancelling_the_coroutine_that_awaits_an_ask_cancels_the_handler(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(Waiter, log)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ref.ask(Hold("abandoned"), block=False), 0.05)

    run(main())
    assert ref.ask("after", timeout=WAIT) == "after"
    assert log == ["start abandoned", "cancelled abandoned", "handled after"]


def test_an_exception_in_a_coroutine_handler_reaches_the_asker_or_on_failure(system: ActorSystem, logs: Any) -> None:
    failures: list[str] = []

    class Failing(Waiter):
        def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
            failures.append(f"{exc_type.__name__}: {exc}")

    ref = system.spawn(Failing, name="failing")
    with pytest.raises(ValueError, match="failed after awaiting"):
        ref.ask("fail", timeout=WAIT)
    assert ref.is_alive()  # an ask's failure goes to the asker only
    ref.tell("fail")
    assert ref.actor_stopped.wait(WAIT)
    assert failures == ["ValueError: failed after awaiting"]
    assert any("failing" in m and "Unhandled exception" in m for m in logs.messages("ERROR"))
    assert [(d.message, d.reason) for d in system.dead_letters.recent()] == [("fail", DeadLetterReason.HANDLER_FAILED)]


class AsyncLifecycle(AsyncioActor):
    def __init__(self, events: list[str], *, fail_in: str | None = None) -> None:
        super().__init__()
        self.events = events
        self.fail_in = fail_in

    async def on_start(self) -> None:  # type: ignore[override]  # pykka types it -> None; asyncio mode awaits it
        await asyncio.sleep(0)
        self.events.append("on_start")
        if self.fail_in == "on_start":
            msg = "start failed"
            raise RuntimeError(msg)

    async def on_receive(self, message: Any) -> Any:
        await asyncio.sleep(0)
        self.events.append(f"receive {message}")
        return message

    async def on_stop(self) -> None:  # type: ignore[override]  # pykka types it -> None; asyncio mode awaits it
        await asyncio.sleep(0)
        self.events.append("on_stop")
        if self.fail_in == "on_stop":
            msg = "stop failed"
            raise RuntimeError(msg)

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.events.append("on_failure")


def test_coroutine_on_start_and_on_stop_are_awaited_before_and_after_the_messages(system: ActorSystem) -> None:
    events: list[str] = []
    ref = system.spawn(AsyncLifecycle, events)
    ref.tell("a")
    assert ref.ask("b", timeout=WAIT) == "b"
    assert ref.stop(timeout=WAIT) is True
    assert events == ["on_start", "receive a", "receive b", "on_stop"]


def test_failing_coroutine_on_start_and_on_stop_follow_the_pykka_rules(system: ActorSystem, logs: Any) -> None:
    started: list[str] = []
    ref = system.spawn(AsyncLifecycle, started, fail_in="on_start")
    assert ref.actor_stopped.wait(WAIT)
    with pytest.raises(ActorDeadError):
        ref.ask("late", timeout=WAIT)
    assert started == ["on_start"]  # no on_failure, no on_stop
    stopped: list[str] = []
    ref = system.spawn(AsyncLifecycle, stopped, fail_in="on_stop")
    assert ref.stop(timeout=WAIT) is True
    assert stopped == ["on_start", "on_stop"]
    errors = [str(r["exception"]) for r in logs if r["exception"]]
    assert any("start failed" in e for e in errors)
    assert any("stop failed" in e for e in errors)


def test_a_system_exit_in_a_coroutine_handler_stops_every_actor_and_the_loop_survives(system: ActorSystem) -> None:
    class Exiter(AsyncioActor):
        async def on_receive(self, message: Any) -> None:
            await asyncio.sleep(0)
            raise SystemExit

    bystander = system.spawn(Waiter)
    ref = system.spawn(Exiter)
    ref.tell("exit")
    assert ref.actor_stopped.wait(WAIT)
    assert bystander.actor_stopped.wait(WAIT)
    assert system.spawn(Waiter).ask("the loop still runs", timeout=WAIT) == "the loop still runs"


def test_timers_deliver_to_a_coroutine_on_receive(system: ActorSystem, clock: ManualClock) -> None:
    class Ticker(AsyncioActor):
        def __init__(self) -> None:
            super().__init__()
            self.ticks: list[Any] = []

        async def on_receive(self, message: Any) -> Any:
            if message == "start":
                self.timers.start_periodic_timer("t", "tick", 1.0)
            elif message == "ticks":
                return list(self.ticks)
            else:
                await asyncio.sleep(0)
                self.ticks.append(message)
            return None

    ref = system.spawn(Ticker)
    ref.ask("start", timeout=WAIT)
    clock.advance(3)
    assert ref.ask("ticks", timeout=WAIT) == ["tick", "tick", "tick"]


# -- loops ---------------------------------------------------------------------------------


def test_the_loop_thread_starts_with_the_first_asyncio_actor_and_is_joined_at_shutdown() -> None:
    with ActorSystem("lazy", dispatchers=1) as system:
        system.spawn(Recorder).ask(1)
        assert loop_threads() == []  # pooled actors need no loop
        refs = [system.spawn(Waiter) for _ in range(3)]
        assert loop_threads() == ["troupe-lazy-asyncio"]  # one loop for every asyncio actor
        assert [ref.ask(i, timeout=WAIT) for i, ref in enumerate(refs)] == [0, 1, 2]
    assert loop_threads() == []


def test_a_system_given_a_running_loop_runs_its_actors_there_and_leaves_the_loop_alone() -> None:
    test_thread = threading.current_thread().name

    class Where(AsyncioActor):
        async def on_receive(self, message: Any) -> Any:
            await asyncio.sleep(0)
            return threading.current_thread().name

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with ActorSystem("given", loop=loop, dispatchers=1) as system:
            ref = system.spawn(Where)
            assert await ref.ask("where", block=False) == test_thread
            assert await ref.proxy().on_receive("via proxy") == test_thread
            assert loop_threads() == []
            with pytest.raises(EventLoopError, match="block=False"):
                ref.ask("blocking on the loop's own thread")
            with pytest.raises(SystemShutdownError, match="ashutdown"):
                system.shutdown()
            assert system.is_running
        assert not system.is_running
        assert not ref.is_alive()
        assert loop.is_running()  # the system never stops or closes a loop it was given

    run(main())


def test_a_given_loop_that_is_not_running_is_refused_at_spawn() -> None:
    loop = asyncio.new_event_loop()
    try:
        with ActorSystem("idle-loop", loop=loop, dispatchers=1) as system:
            with pytest.raises(EventLoopError, match="not running"):
                system.spawn(Waiter)
            assert system.children() == []
            assert system.spawn(Recorder).ask("pooled still fine") == "pooled still fine"
    finally:
        loop.close()
    with ActorSystem("closed-loop", loop=loop, dispatchers=1) as system, pytest.raises(EventLoopError, match="closed"):
        system.spawn(Waiter)


def test_actors_whose_given_loop_closed_fail_clearly_and_the_system_still_shuts_down(logs: Any) -> None:
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="test-loop")
    loop_thread.start()
    try:
        system = ActorSystem("orphaned", loop=loop, dispatchers=1)
        ref = system.spawn(Waiter, name="orphan")
        assert ref.ask("alive", timeout=WAIT) == "alive"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join()
        loop.close()
    with pytest.raises(EventLoopError, match=r"'orphan'.*is closed"):
        ref.ask("after the loop closed", timeout=WAIT)
    assert ref.actor_stopped.wait(WAIT)
    assert system.spawn(Recorder).ask("pooled still fine") == "pooled still fine"
    system.shutdown(timeout=WAIT)
    assert any("is closed" in m for m in logs.messages("ERROR"))


def test_mail_sent_while_a_given_loop_stops_and_closes_is_not_stranded() -> None:
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, name="test-loop")
    loop_thread.start()
    system = ActorSystem("stranded", loop=loop, dispatchers=1)
    first = system.spawn(Waiter, name="first")
    second = system.spawn(Waiter, name="second")
    loop.call_soon_threadsafe(loop.stop)
    loop_thread.join()
    first.tell("queued while the loop is stopped")  # schedules a wake-up the loop will never run
    loop.close()
    with pytest.raises(EventLoopError, match=r"'second'.*is closed"):
        second.ask("after the loop closed", timeout=WAIT)
    assert first.actor_stopped.wait(WAIT)  # found in the queue the closed loop left behind
    letters = [(d.message, d.reason) for d in system.dead_letters.recent()]
    assert ("queued while the loop is stopped", DeadLetterReason.QUEUED_AT_STOP) in letters
    system.shutdown(timeout=WAIT)


def test_ashutdown_from_a_coroutine_on_another_loop_and_from_an_own_actor(system: ActorSystem) -> None:
    class Shutter(AsyncioActor):
        async def on_receive(self, message: Any) -> None:
            await self.actor_system.ashutdown()

    shutter = system.spawn(Shutter)
    with pytest.raises(SystemShutdownError, match="its own actors"):
        shutter.ask("now", timeout=WAIT)
    ref = system.spawn(Waiter)

    async def main() -> None:
        assert await ref.ask("hi", block=False) == "hi"
        await system.ashutdown(timeout=WAIT)
        await system.ashutdown()  # idempotent

    run(main())
    assert not system.is_running
    assert not ref.is_alive()
    assert loop_threads() == []


# -- bad input -----------------------------------------------------------------------------


def test_coroutine_handlers_choose_asyncio_and_are_refused_where_nothing_awaits_them(system: ActorSystem) -> None:
    assert system.spawn(Waiter).ask(1, timeout=WAIT) == 1  # mode-neutral, async: asyncio by default
    for mode in ("pooled", "thread"):
        with pytest.raises(ModeError, match=r"coroutine handlers \(on_receive\).*mode='asyncio'"):
            system.spawn(Waiter, mode=mode)

    class PooledAsync(PooledActor):
        async def fetch(self) -> int:
            return 1

    class Reentrant(Actor):
        reentrant = True

    class AsyncOnFailure(AsyncioActor):
        async def on_failure(self, *exc_info: Any) -> None:  # type: ignore[override]  # refused: the point
            pass

    with pytest.raises(ModeError, match=r"\(fetch\)"):
        system.spawn(PooledAsync)
    with pytest.raises(ModeError, match="reentrant"):
        system.spawn(Reentrant)
    with pytest.raises(ModeError, match="on_failure"):
        system.spawn(AsyncOnFailure)
    assert system.children() == [system.children()[0]]  # only the Waiter above


def test_a_coroutine_reached_through_a_proxy_in_a_mode_without_a_loop_is_a_clear_error(system: ActorSystem) -> None:
    class Nested:
        pykka_traversable = True

        async def fetch(self) -> int:
            return 1

    class Holder(Actor):
        def __init__(self) -> None:
            super().__init__()
            self.nested = Nested()

    proxy = system.spawn(Holder, mode="pooled").proxy()
    with pytest.raises(ModeError, match=r"nested\.fetch returned a coroutine.*mode='asyncio'"):
        proxy.nested.fetch().get(timeout=WAIT)
    assert system.spawn(Holder, mode="asyncio").proxy().nested.fetch().get(timeout=WAIT) == 1


def test_a_handler_blocking_the_loop_is_reported_with_the_actor_and_the_time(
    system: ActorSystem, clock: ManualClock, logs: Any
) -> None:
    # Held time is measured on the system's clock: the handler "blocks" by
    # moving the manual clock while it holds the loop.
    class Hog(AsyncioActor):
        def on_receive(self, seconds: float) -> str:
            clock.advance(seconds)
            return "sync"

        async def step(self, seconds: float) -> str:
            await asyncio.sleep(0)
            clock.advance(seconds)
            return "async"

        async def first_step(self, seconds: float) -> str:
            clock.advance(seconds)  # before any await: in the turn that took the message
            return "first step"

    hog = system.spawn(Hog, name="hog")
    assert hog.ask(0.25, timeout=WAIT) == "sync"
    assert hog.proxy().step(0.5).get(timeout=WAIT) == "async"
    assert hog.ask(0.05, timeout=WAIT) == "sync"  # under the 0.1 s default: no warning
    assert hog.proxy().first_step(0.3).get(timeout=WAIT) == "first step"
    assert hog.ask(0.3, timeout=WAIT) == "sync"

    # The warning is logged when the turn ends, after its reply went out: a
    # turn of another actor on the same loop runs only after hog's has ended.
    class Probe(AsyncioActor):
        def on_receive(self, message: str) -> str:
            return message

    assert system.spawn(Probe).ask("after hog's turn", timeout=WAIT) == "after hog's turn"
    warnings = logs.messages("WARNING")
    assert len(warnings) == 4, warnings  # once each, the first step too (timed as the turn it ran in)
    assert "'hog'" in warnings[0]
    assert "held the event loop" in warnings[0]
    assert "0.250 s" in warnings[0]
    assert "0.500 s" in warnings[1]
    assert "0.300 s" in warnings[2]
    assert "0.300 s" in warnings[3]
    assert system.spawn(Waiter).ask("still serving", timeout=WAIT) == "still serving"


def test_the_slow_callback_warning_can_be_tuned_or_turned_off(clock: ManualClock, logs: Any) -> None:
    class Hog(AsyncioActor):
        def on_receive(self, seconds: float) -> None:
            clock.advance(seconds)

    with ActorSystem("quiet", clock=clock, dispatchers=1, slow_callback_duration=None) as system:
        system.spawn(Hog).ask(10.0, timeout=WAIT)
    with ActorSystem("strict", clock=clock, dispatchers=1, slow_callback_duration=0.01) as system:
        system.spawn(Hog).ask(0.02, timeout=WAIT)
    assert len(logs.messages("WARNING")) == 1
    with pytest.raises(ValueError, match="slow_callback_duration"):
        ActorSystem("bad", slow_callback_duration=-1)
    with pytest.raises(TypeError, match="event loop"):
        ActorSystem("bad", loop="the loop")  # type: ignore[arg-type]


def test_awaiting_a_future_of_another_loop_is_a_clear_error_and_the_actor_goes_on(system: ActorSystem) -> None:
    class Awaiter(AsyncioActor):
        async def on_receive(self, awaitable: Any) -> Any:
            return await awaitable

    ref = system.spawn(Awaiter, name="awaiter")

    async def main() -> None:
        foreign = asyncio.get_running_loop().create_future()
        wrong_loop = r"'awaiter' \(.*\) awaited an asyncio future that belongs to another event loop"
        with pytest.raises(EventLoopError, match=wrong_loop):
            await ref.ask(foreign, block=False)
        foreign.cancel()
        ok: Future[str] = Future()
        ok.set("troupe futures cross loops")
        assert await ref.ask(ok, block=False) == "troupe futures cross loops"

    run(main())


def test_coroutine_functions_given_as_plain_callbacks_are_refused(system: ActorSystem) -> None:
    async def callback(_: Any) -> None:
        pass

    with pytest.raises(TypeError, match="coroutine function"):
        system.dead_letters.subscribe(callback)
    with pytest.raises(TypeError, match="coroutine function"):
        Future().add_done_callback(callback)  # type: ignore[arg-type]  # refused at run time: the point


def test_a_sender_on_the_loop_cannot_wait_for_room_in_a_full_blocking_mailbox(system: ActorSystem) -> None:
    class Filler(AsyncioActor):
        def __init__(self, target: Any) -> None:
            super().__init__()
            self.target = target

        def on_receive(self, message: Any) -> None:
            self.target.tell(message)

    hold = Hold("busy")
    target = system.spawn(Waiter, mailbox=BoundedMailbox(1, overflow="block", block_timeout=WAIT))
    target.tell(hold)
    hold.wait_entered()
    target.tell("fills the mailbox")
    filler = system.spawn(Filler, target)
    with pytest.raises(MailboxFullError, match="cannot wait for room"):
        filler.ask("one too many", timeout=WAIT)
    hold.release()
    assert target.ask("log", timeout=WAIT) == ["start busy", "end busy", "handled fills the mailbox"]


# -- supervision ------------------------------------------------------------------------------


class AsyncWorker(AsyncioActor):
    """Every hook a coroutine that yields to the loop once; logs each one; ``"boom"`` raises."""

    def __init__(self, log: list[str], tag: str) -> None:
        super().__init__()
        self.log = log
        self.tag = tag

    async def on_start(self) -> None:  # type: ignore[override]  # pykka types it -> None; asyncio mode awaits it
        await asyncio.sleep(0)
        self.log.append(f"start {self.tag}")

    async def on_receive(self, message: Any) -> Any:
        if isinstance(message, Hold):
            message.entered.set(None)
            try:
                return await message.gate
            except asyncio.CancelledError:
                self.log.append(f"cancelled {self.tag}")
                raise
        await asyncio.sleep(0)
        if message == "boom":
            msg = f"boom in {self.tag}"
            raise ValueError(msg)
        return message

    async def on_stop(self) -> None:  # type: ignore[override]  # pykka types it -> None; asyncio mode awaits it
        await asyncio.sleep(0)
        self.log.append(f"stop {self.tag}")

    async def pre_restart(self, exc: BaseException | None) -> None:
        await asyncio.sleep(0)
        self.log.append(f"pre_restart {self.tag} {type(exc).__name__}")

    async def post_restart(self, exc: BaseException | None) -> None:
        await asyncio.sleep(0)
        self.log.append(f"post_restart {self.tag}")
        await super().post_restart(exc)  # on_start


def test_a_permanent_asyncio_actor_is_restarted_after_a_coroutine_fails_and_its_hooks_are_awaited(
    system: ActorSystem,
) -> None:
    log: list[str] = []
    ref = system.spawn(AsyncWorker, log, "w", restart="permanent")
    ref.tell("boom")
    assert ref.ask("after", timeout=WAIT) == "after"  # queued behind the failure: the new instance answers
    assert log == ["start w", "pre_restart w ValueError", "post_restart w", "start w"]  # failed: no on_stop
    assert [d.reason for d in system.dead_letters.recent()] == [DeadLetterReason.HANDLER_FAILED]


def test_a_one_for_all_restart_cancels_a_siblings_handler_in_flight_and_awaits_the_hooks(system: ActorSystem) -> None:
    log: list[str] = []
    specs = [
        ChildSpec(AsyncWorker, (log, "a"), name="a", restart="permanent"),
        ChildSpec(AsyncWorker, (log, "b"), name="b", restart="permanent"),
    ]
    sup = system.spawn(Supervisor, specs, policy=SupervisionPolicy("one_for_all"))
    refs = {c.name: c.ref for c in sup.proxy().which_children().get(timeout=WAIT)}
    hold = Hold("in flight")
    pending = refs["b"].ask(hold, block=False)
    hold.wait_entered()
    del log[:]
    refs["a"].tell("boom")
    with pytest.raises(ActorDeadError, match=r"'b'.*restarted while handling"):
        pending.get(timeout=WAIT)
    assert refs["a"].ask("x", timeout=WAIT) == "x"
    assert refs["b"].ask("y", timeout=WAIT) == "y"
    # Torn down youngest first ("b" did not fail: its on_stop runs), rebuilt oldest first.
    assert log == [
        "cancelled b",
        "stop b",
        "pre_restart b ValueError",
        "pre_restart a ValueError",
        "post_restart a",
        "start a",
        "post_restart b",
        "start b",
    ]


def test_a_tell_with_a_receipt_to_a_coroutine_handler_keeps_tell_semantics(system: ActorSystem) -> None:
    log: list[str] = []
    ref = system.spawn(AsyncWorker, log, "w", restart="permanent")
    done: Receipt[Any] = Receipt()
    ref._post_tell("hello", done)
    assert done.get(timeout=WAIT) == "hello"
    failed: Receipt[Any] = Receipt()
    ref._post_tell("boom", failed)
    with pytest.raises(ValueError, match="boom in w"):
        failed.get(timeout=WAIT)
    assert ref.ask("after", timeout=WAIT) == "after"
    assert "pre_restart w ValueError" in log  # the failure failed the actor: it was restarted


def test_an_asyncio_actor_watches_another_and_gets_terminated_in_a_coroutine(system: ActorSystem) -> None:
    seen: Future[Any] = Future()

    class AsyncWatcher(AsyncioActor):
        async def on_receive(self, message: Any) -> None:
            if isinstance(message, Terminated):
                await asyncio.sleep(0)
                seen.set(message)
            else:
                self.watch(message)

    watcher = system.spawn(AsyncWatcher)
    target = system.spawn(Waiter)
    watcher.ask(target, timeout=WAIT)
    target.stop()
    assert seen.get(timeout=WAIT) == Terminated(target, None)
