"""Actors the messaging tests share."""

from __future__ import annotations

from typing import Any

from actors import Actor
from tests.core.actors_for_tests import Gate


class Recorder(Actor):
    """Records what it is told; asked "get", replies with the list; asked ("hold", gate), blocks on it."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "get":
            return list(self.got)
        if isinstance(message, tuple) and len(message) == 2 and isinstance(message[1], Gate):
            return message[1].hold_then(lambda: None)
        self.got.append(message)
        return None
