"""Actors for the cluster tests (module level: they pickle by reference on every node)."""

from __future__ import annotations

from typing import Any

import attrs

from actors import Actor, Terminated


@attrs.frozen
class Msg:
    sender: str
    seq: int


class Recorder(Actor):
    """Keeps every message it gets; ``"log"`` asks for them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "log":
            return list(self.seen)
        if message == "count":
            return len(self.seen)
        self.seen.append(message)
        return None

    def snapshot(self) -> list[Any]:
        return list(self.seen)

    def restore(self, state: list[Any]) -> None:
        self.seen = list(state)


class Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message and message[0] == "fail":
            raise ValueError(message[1])
        return message

    def add(self, a: int, b: int) -> int:
        return a + b


class Sender(Actor):
    """Sends `count` `Msg`s to a ref when told ``("send", ref, count)``; ``("ask", ref, msg)`` asks it."""

    def on_receive(self, message: Any) -> Any:
        if message[0] == "send":
            _, ref, count = message
            for i in range(count):
                ref.tell(Msg(self.actor_name or "?", i))
            return count
        if message[0] == "ask":
            return message[1].ask(message[2], timeout=10)
        return None


class Watcher(Actor):
    """Watches the ref it is told ``("watch", ref)``; ``"events"`` returns (name, reason type) per Terminated."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str | None, str | None]] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Terminated):
            reason = message.reason
            self.events.append((message.ref.actor_name, None if reason is None else type(reason).__name__))
            return None
        if message == "events":
            return list(self.events)
        if message[0] == "watch":
            self.watch(message[1])
            return True
        return None


class NoSnapshot(Actor):
    def on_receive(self, message: Any) -> Any:
        return message


class Blob(Actor):
    """Holds a bytes state of the given size (migration benchmark)."""

    def __init__(self, size: int = 0) -> None:
        super().__init__()
        self.state = b"x" * size

    def on_receive(self, message: Any) -> Any:
        return len(self.state)

    def snapshot(self) -> bytes:
        return self.state

    def restore(self, state: bytes) -> None:
        self.state = state
