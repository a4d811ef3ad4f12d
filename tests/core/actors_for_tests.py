"""Test actors: mode-neutral mixins, spawned in each mode by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import TYPE_CHECKING, Any

from actors import Actor, Future

if TYPE_CHECKING:
    from collections.abc import Callable

WAIT = 10  # seconds: generous upper bound for events; a hang guard, not a sleep


class _Released(threading.Event):
    """A `threading.Event` whose `set` also settles a future that coroutines can await."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Future[None] = Future()

    def set(self) -> None:
        super().set()
        with contextlib.suppress(queue.Full):  # set twice
            self.opened.set(None)


class Gate:
    """A message that holds its actor until released: entered -> (test acts) -> release."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = _Released()

    def hold(self) -> None:
        """Block the handler's thread until released (on an event loop: every actor of the loop)."""
        self.entered.set()
        assert self.released.wait(WAIT), "gate never released"

    def hold_then(self, reply: Callable[[], Any]) -> Any:
        """Hold the actor until released, then return ``reply()``: return it from a handler.

        On a thread the handler blocks. On an event loop (asyncio mode) it
        returns a coroutine that awaits the gate, which the runtime awaits: the
        actor is held, and the other actors on its loop keep running.
        """
        self.entered.set()
        if asyncio._get_running_loop() is None:
            assert self.released.wait(WAIT), "gate never released"
            return reply()

        async def held() -> Any:
            await asyncio.wait_for(self.released.opened, WAIT)
            return reply()

        return held()

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT), "actor never reached the gate"


class Recorder(Actor):
    """Records every message; replies with it. ``Gate`` blocks; ``"fail"`` raises."""

    def __init__(self, log: list[Any] | None = None) -> None:
        super().__init__()
        self.received: list[Any] = [] if log is None else log
        self.threads: set[str] = set()

    def on_receive(self, message: Any) -> Any:
        self.threads.add(threading.current_thread().name)
        if isinstance(message, Gate):
            message.hold()
            return None
        if message == "fail":
            msg = "fail on purpose"
            raise ValueError(msg)
        if message == "get":
            return list(self.received)
        self.received.append(message)
        return message

    def received_so_far(self) -> list[Any]:
        return list(self.received)
