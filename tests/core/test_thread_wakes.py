"""Thread mode: many idle actor threads woken at once, and many started at once.

A burst of asks to idle thread-mode actors wakes their threads a few at a
time (`StopPacer`), and spawning starts their threads without waiting for
each to run, at most `START_WIDTH` not yet running (`ThreadExecutor.start`).
Either way a deferred thread goes on as soon as an earlier one has begun,
not once it has finished: handlers and ``on_start`` hooks that wait for a
later actor's to begin still all run.
"""

from __future__ import annotations

import threading
from typing import Any

from actors import Actor, ActorSystem
from actors._core.executors import START_WIDTH, STOP_WAKE_WIDTH
from tests.core.actors_for_tests import WAIT


class _WaitsForTheLast(Actor):
    """Its handler blocks until the last actor's handler began; answers what it saw and where ("ready": at once)."""

    def __init__(self, index: int, last: int, reached: threading.Event) -> None:
        super().__init__()
        self.index, self.last, self.reached = index, last, reached

    def on_receive(self, message: Any) -> Any:
        if message == "ready":
            return message
        if self.index == self.last:
            self.reached.set()
        return message, self.reached.wait(timeout=WAIT), threading.current_thread().name


class _StartWaitsForTheLast(Actor):
    """Its ``on_start`` blocks until the last actor's ``on_start`` has begun; records what it saw."""

    def __init__(self, index: int, last: int, reached: threading.Event, seen: list[Any]) -> None:
        super().__init__()
        self.index, self.last, self.reached, self.seen = index, last, reached, seen

    def on_start(self) -> None:
        if self.index == self.last:
            self.reached.set()
        self.seen.append((self.index, self.reached.wait(timeout=WAIT)))  # list.append is atomic

    def on_receive(self, message: Any) -> Any:
        return message


def test_a_burst_of_asks_to_idle_thread_actors_reaches_every_one_even_while_earlier_handlers_block(
    system: ActorSystem,
) -> None:
    count = STOP_WAKE_WIDTH * 2 + 5
    reached = threading.Event()
    refs = [system.spawn(_WaitsForTheLast, i, count - 1, reached, mode="thread", name=f"a{i}") for i in range(count)]
    assert [ref.ask("ready", timeout=WAIT) for ref in refs] == ["ready"] * count  # every thread idle now

    asks = [ref.ask(i, block=False) for i, ref in enumerate(refs)]

    answers = [ask.get(timeout=WAIT) for ask in asks]
    assert [(message, saw) for message, saw, _ in answers] == [(i, True) for i in range(count)]
    assert all(thread.startswith(f"a{i}-") for i, (_, _, thread) in enumerate(answers))


def test_spawning_more_thread_actors_than_start_at_once_starts_every_one_even_while_earlier_on_starts_block(
    system: ActorSystem,
) -> None:
    count = START_WIDTH * 2 + 5
    reached = threading.Event()
    seen: list[Any] = []

    refs = [system.spawn(_StartWaitsForTheLast, i, count - 1, reached, seen, mode="thread") for i in range(count)]

    assert [ref.ask(i, timeout=WAIT) for i, ref in enumerate(refs)] == list(range(count))
    assert sorted(seen) == [(i, True) for i in range(count)]
