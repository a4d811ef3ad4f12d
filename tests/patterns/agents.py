"""Test agents for the coordination patterns: mode-neutral, spawned in each mode by the tests."""

from __future__ import annotations

import threading
from typing import Any

from actors import Actor
from tests.core.actors_for_tests import Gate


class Echo(Actor):
    """Replies with a function of the message; holds on a Gate given for a message; raises for "fail"."""

    def __init__(
        self,
        fn: Any = None,
        gates: dict[Any, Gate] | None = None,
        log: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self.fn = fn
        self.gates = gates or {}
        self.log = log
        self.lock = threading.Lock()

    def on_receive(self, message: Any) -> Any:
        if self.log is not None:
            with self.lock:
                self.log.append((self.actor_name, message))
        gate = self.gates.get(message) if isinstance(message, (int, str)) else None
        if gate is not None:
            # Held on a thread, or awaited on an event loop (the loop's other actors go on).
            return gate.hold_then(lambda: self.reply(message))
        return self.reply(message)

    def reply(self, message: Any) -> Any:
        if message == "fail":
            msg = "fail on purpose"
            raise ValueError(msg)
        return self.fn(message) if self.fn is not None else message
