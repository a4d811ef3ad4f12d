"""Awaiting a reply set on another thread: the awaiting task wakes in the loop pass that hears of it.

`actors._core.future._Waiter` is what a task awaiting an ask suspends on;
these tests hold it to asyncio's future protocol (wake-up, cancellation)
and the ask to its outcome in every mode.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pykka import ActorDeadError

from actors import ActorSystem
from actors._core.future import _Waiter
from tests.core.actors_for_tests import WAIT, Gate, Recorder


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, WAIT))


def test_many_coroutines_awaiting_asks_from_another_loop_each_get_their_reply(system: ActorSystem, mode: str) -> None:
    ref = system.spawn(Recorder, mode=mode)

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(ref.ask(i, block=False) for i in range(50))))

    assert _run(main()) == list(range(50))
    assert ref.ask("get", timeout=WAIT) == list(range(50))


def test_asks_awaited_one_at_a_time_from_another_loop_get_their_replies_in_order(
    system: ActorSystem, mode: str
) -> None:
    # One at a time, nothing else on the loop: the awaiting task spins for
    # each reply and warms the executor that replies (a listening
    # dispatcher, the asyncio executor's own loop spinning in its selector),
    # while another thread tells the same actor meanwhile.
    ref = system.spawn(Recorder, mode=mode)

    def tell_all() -> None:
        for i in range(100):
            ref.tell(("told", i))

    told = threading.Thread(target=tell_all, name="test-teller")

    async def main() -> list[Any]:
        replies = [await ref.ask(i, block=False) for i in range(100)]
        told.start()
        replies += [await ref.ask(i, block=False) for i in range(100, 200)]
        told.join(WAIT)
        return replies

    assert _run(main()) == list(range(200))
    log = ref.ask("get", timeout=WAIT)
    assert [m for m in log if not isinstance(m, tuple)] == list(range(200))
    assert [m for m in log if isinstance(m, tuple)] == [("told", i) for i in range(100)]


def test_a_coroutine_cancelled_while_awaiting_an_ask_is_cancelled_and_the_actor_serves_on(
    system: ActorSystem, mode: str
) -> None:
    ref = system.spawn(Recorder, mode=mode)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()

    async def main() -> Any:
        waiting = asyncio.ensure_future(ref.ask("held", block=False))
        await asyncio.sleep(0)  # it is suspended on its waiter now
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.released.set()
        return await ref.ask("after", block=False)

    assert _run(main()) == "after"


def test_an_ask_awaited_from_another_loop_gets_the_handlers_error_and_the_actor_serves_on(
    system: ActorSystem, mode: str
) -> None:
    ref = system.spawn(Recorder, mode=mode)

    async def main() -> Any:
        with pytest.raises(ValueError, match="fail on purpose"):
            await ref.ask("fail", block=False)
        return await ref.ask("after", block=False)

    assert _run(main()) == "after"


def test_an_ask_awaited_from_another_loop_and_sent_before_a_stop_gets_its_reply(system: ActorSystem, mode: str) -> None:
    # The stop comes while the ask waits its turn: as in pykka, the messages
    # sent before a stop are handled, so the awaited ask still resolves.
    ref = system.spawn(Recorder, mode=mode)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()

    async def main() -> tuple[Any, Any]:
        asked = ref.ask("before the stop", block=False)
        stopped = ref.stop(block=False)
        gate.released.set()
        return await asked, await stopped

    assert _run(main()) == ("before the stop", True)


def test_an_ask_awaited_from_another_loop_and_sent_after_a_stop_raises_actor_dead_error(
    system: ActorSystem, mode: str
) -> None:
    ref = system.spawn(Recorder, mode=mode)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()

    async def ask_after_the_stop() -> Any:
        asked = ref.ask("after the stop", block=False)  # refused now, or left unanswered by the stop
        gate.released.set()
        return await asked

    async def main() -> Any:
        stopped = ref.stop(block=False)
        try:
            with pytest.raises(ActorDeadError):
                await ask_after_the_stop()
        finally:
            gate.released.set()
        return await stopped

    assert _run(main()) is True


def test_a_reply_for_a_coroutine_whose_loop_closed_meanwhile_is_kept_and_the_actor_serves_on(
    system: ActorSystem, mode: str, logs: Any
) -> None:
    # The asker's loop closes while its task waits for the reply (no one
    # cancels the task): the reply, set on the actor's thread, finds no loop
    # to wake. It must not raise into the actor, nor be lost to a getter.
    ref = system.spawn(Recorder, mode=mode)
    gate = Gate()
    ref.tell(gate)
    gate.wait_entered()
    asked: list[Any] = []

    async def main() -> Any:
        future = ref.ask("for a closed loop", block=False)
        asked.append(future)
        return await future

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(main())
        loop.run_until_complete(asyncio.sleep(0))  # the task's first step: it suspends on its waiter
        assert not task.done()
        assert not asked[0].done()
    finally:
        loop.close()
    gate.released.set()
    assert asked[0].get(timeout=WAIT) == "for a closed loop"
    assert ref.ask("after", timeout=WAIT) == "after"
    assert not logs.messages("ERROR")
    assert not logs.messages("CRITICAL")


class _Suspend:
    """Await a `_Waiter` the way `Future._wait` does."""

    def __init__(self, waiter: _Waiter) -> None:
        self.waiter = waiter

    def __await__(self) -> Any:
        self.waiter._asyncio_future_blocking = True
        yield self.waiter
        self.waiter.result()


def test_a_waiter_resolved_from_a_plain_callback_wakes_its_task_in_that_same_callback() -> None:
    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        task = asyncio.ensure_future(_Suspend(waiter))
        await asyncio.sleep(0)
        seen = loop.create_future()
        loop.call_soon(waiter.resolve_now)
        loop.call_soon(lambda: seen.set_result(task.done()))  # the next callback of the same pass
        done_at_once = await seen
        await task
        return done_at_once, waiter.done()

    assert _run(main()) == (True, True)


def test_a_waiter_resolved_while_a_task_runs_schedules_the_wake_up_instead() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        task = asyncio.ensure_future(_Suspend(waiter))
        await asyncio.sleep(0)
        waiter.resolve_now()  # this task is running: the other one cannot be entered now
        early = task.done()
        await task
        return early

    assert _run(main()) is False


def test_a_cancelled_waiter_raises_cancelled_error_and_ignores_a_late_reply() -> None:
    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        task = asyncio.ensure_future(_Suspend(waiter))
        await asyncio.sleep(0)
        task.cancel("because")
        with pytest.raises(asyncio.CancelledError):
            await task
        waiter.resolve_now()  # the reply came after all: nothing to wake
        return waiter.cancelled(), waiter.cancel()

    assert _run(main()) == (True, False)
