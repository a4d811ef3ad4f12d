"""Actors for the cluster tests (module level: they pickle by reference on every node)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import attrs

from actors import Actor, Terminated

if TYPE_CHECKING:
    from collections.abc import Callable


@attrs.frozen
class Msg:
    sender: str
    seq: int


class Recorder(Actor):
    """Keeps every message it gets (and answers an ask with how many it has); ``"log"`` asks for them.

    ``"moves"`` asks for the `Moved` record of each message: how many times
    the instance that handled it had been restored (0 before its first
    migration). With `GATE` set, ``"block"`` holds the handler until it is released.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.restored = 0
        self.moves: list[int] = []

    def on_receive(self, message: Any) -> Any:
        if message == "log":
            return list(self.seen)
        if message == "count":
            return len(self.seen)
        if message == "moves":
            return list(self.moves)
        if message == "block":
            BLOCKED.set()
            GATE.wait(30)
            return None
        self.seen.append(message)
        self.moves.append(self.restored)
        return len(self.seen)

    def snapshot(self) -> tuple[list[Any], list[int], int]:
        return list(self.seen), list(self.moves), self.restored

    def restore(self, state: tuple[list[Any], list[int], int]) -> None:
        seen, moves, restored = state
        self.seen, self.moves, self.restored = list(seen), list(moves), restored + 1


class HookedRecorder(Recorder):
    """A `Recorder` whose ``restore`` first runs (and removes) the first hook in `ON_RESTORE`.

    On the memory transport a node restarting a failed-over actor restores it
    in the middle of its directory batch (`Node.apply`), and waits for it: a
    hook there acts between the batch's DOWN and its end.
    """

    def restore(self, state: tuple[list[Any], list[int], int]) -> None:
        if ON_RESTORE:
            ON_RESTORE.pop(0)()
        super().restore(state)


ON_RESTORE: list[Callable[[], None]] = []
"""Hooks of `HookedRecorder.restore` (memory transport: the same process); a test clears what it set."""

GATE = threading.Event()
"""Holds `Recorder`'s ``"block"`` handler (memory transport: the same process)."""
BLOCKED = threading.Event()
"""Set once `Recorder`'s ``"block"`` handler runs: the message is in hand (not still queued, where a
migration's snapshot, a system message, would take it with the mailbox)."""


class Echo(Actor):
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message and message[0] == "fail":
            raise ValueError(message[1])
        return message

    def add(self, a: int, b: int) -> int:
        return a + b


class Sender(Actor):
    """Sends `count` `Msg`s to a ref when told ``("send", ref, count[, first])``; ``("ask", ref, msg)`` asks it.

    ``("ask_within", ref, msg, timeout)`` asks it with that timeout and answers the reply or the error's class name.
    """

    def on_receive(self, message: Any) -> Any:
        if message[0] == "send":  # ("send", ref, count[, first seq])
            ref, count = message[1], message[2]
            first = message[3] if len(message) > 3 else 0
            for i in range(first, first + count):
                ref.tell(Msg(self.actor_name or "?", i))
            return count
        if message[0] == "ask":
            return message[1].ask(message[2], timeout=10)
        if message[0] == "ask_within":  # ("ask_within", ref, msg, timeout): the reply, or the error's class name
            try:
                return message[1].ask(message[2], timeout=message[3])
            except Exception as exc:  # noqa: BLE001 - the test compares the class name
                return type(exc).__name__
        if message[0] == "send_then_ask":  # ("send_then_ask", ref, count): tells, then an untimed ask of "log"
            for i in range(message[2]):
                message[1].tell(Msg(self.actor_name or "?", i))
            return message[1].ask("log")
        if message[0] == "mixed":  # every third message an ask (kept), the rest tells
            _, ref, count = message
            for i in range(count):
                if i % 3 == 0:
                    self.asked.append((i, ref.ask(Msg(self.actor_name or "?", i), block=False)))
                else:
                    ref.tell(Msg(self.actor_name or "?", i))
            return count
        if message[0] == "ask_later":  # an ask whose answer `"answers"` gets later
            self.asked.append((-1, message[1].ask(message[2], block=False)))
            return None
        if message[0] == "answers":  # (seq, the answer or the error's class name) of each kept ask
            return [(seq, _outcome(future)) for seq, future in self.asked]
        return None

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[int, Any]] = []


def _outcome(future: Any) -> Any:
    try:
        return future.get(timeout=30)
    except Exception as exc:  # noqa: BLE001 - the test compares the class name
        return type(exc).__name__


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


def check_log(log: list[Msg], answers: dict[str, list[tuple[int, Any]]], count: int) -> None:
    """Each sender's `count` messages are in `log` once and in order; each of its asks was answered with its place."""
    for sender, got in answers.items():
        assert [m.seq for m in log if m.sender == sender] == list(range(count)), sender
        places = {m.seq: i + 1 for i, m in enumerate(log) if m.sender == sender}
        assert got == [(seq, places[seq]) for seq in range(0, count, 3)], sender


class BadSnapshot(Recorder):
    """A `Recorder` whose ``snapshot()`` raises (a migration of it fails; it stays)."""

    def snapshot(self) -> Any:
        msg = "no snapshot today"
        raise RuntimeError(msg)


class Where(Actor):
    """Answers with (the message, the id of the thread that handled it).

    ``("ask", ref, msg)`` asks `ref` with no timeout, ``("ask_timed", ref, msg)`` with one;
    either answers (the reply, the id of the asking thread).
    """

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message and message[0] == "ask":
            return message[1].ask(message[2]), threading.get_ident()
        if isinstance(message, tuple) and message and message[0] == "ask_timed":
            return message[1].ask(message[2], timeout=10), threading.get_ident()
        return message, threading.get_ident()
