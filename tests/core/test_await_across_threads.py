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
