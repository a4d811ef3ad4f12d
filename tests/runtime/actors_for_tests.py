"""Test actors: mode-neutral mixins, spawned in each mode by the tests."""

from __future__ import annotations

import threading
from typing import Any

from actors import Actor

WAIT = 10  # seconds: generous upper bound for events; a hang guard, not a sleep


class Gate:
    """A message that blocks its actor until released: entered -> (test acts) -> release."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()

    def hold(self) -> None:
        self.entered.set()
        assert self.released.wait(WAIT), "gate never released"

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
